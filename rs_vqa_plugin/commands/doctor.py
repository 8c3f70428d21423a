"""`doctor`: report the stack (QGIS, GDAL arrays, torch, transformers, onnxruntime, Ray) and the device."""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys

from ..setup_advice import runtime_setup_advice

HELP = "check the Python stack and report versions, torch device and ONNX Runtime providers"


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-qgis", action="store_true", help="skip the QGIS import check")


def _version(module_name: str):
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # report, never crash: this is the diagnostics tool
        return None, f"{type(exc).__name__}: {exc}"
    return module, getattr(module, "__version__", "?")


def redact_home(text: str) -> str:
    home = os.path.expanduser("~")
    return text.replace(home, "~") if home and home != "/" else text


def collect(check_qgis: bool = True) -> dict:
    report = {"python": sys.version.split()[0], "executable": redact_home(sys.executable),
              "platform": platform.platform(), "packages": {}, "problems": []}
    packages = report["packages"]
    np, packages["numpy"] = _version("numpy")
    try:
        from osgeo import gdal, gdal_array  # noqa: F401  (gdal_array fails with numpy 2)

        packages["gdal"] = gdal.__version__
    except Exception as exc:
        packages["gdal"] = None
        report["problems"].append(f"GDAL with numpy arrays is not importable ({exc}); "
                                  "install python3-gdal and keep numpy<2.")
    if check_qgis:
        try:
            from qgis.core import Qgis

            packages["qgis"] = Qgis.QGIS_VERSION
        except Exception as exc:
            packages["qgis"] = None
            report["problems"].append(f"QGIS Python bindings not importable ({exc}); "
                                      "install python3-qgis and use a venv with system site packages.")
    torch, packages["torch"] = _version("torch")
    _, packages["transformers"] = _version("transformers")
    ort, packages["onnxruntime"] = _version("onnxruntime")
    for name in ("torch", "transformers", "onnxruntime"):
        if isinstance(packages[name], str) and packages[name].startswith(("ModuleNotFound", "Import")):
            report["problems"].append(f"{name} is missing: {runtime_setup_advice()}.")
    # Only `eval --ray` / `batch --ray` need Ray: reported, never a problem; not imported here.
    try:
        from importlib.metadata import PackageNotFoundError, version

        packages["ray"] = version("ray")
    except PackageNotFoundError:
        packages["ray"] = None
    if torch is not None:
        report["torch_device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if ort is not None:
        report["onnxruntime_providers"] = ort.get_available_providers()
        from ..engine.onnx_session import resolve_providers

        report["onnxruntime_provider_auto"] = resolve_providers("auto")[0]
    return report


def run(args) -> int:
    report = collect(check_qgis=not args.no_qgis)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"rs-vqa stack report (Python {report['python']}, {report['executable']})")
        for name, version in report["packages"].items():
            print(f"  {name:<13} {version if version else 'NOT AVAILABLE'}")
        if "torch_device" in report:
            print(f"  torch device  {report['torch_device']}")
        if "onnxruntime_providers" in report:
            print(f"  ORT providers {', '.join(report['onnxruntime_providers'])} "
                  f"(auto uses {report['onnxruntime_provider_auto']})")
        for problem in report["problems"]:
            print(f"  PROBLEM: {problem}")
    return 1 if report["problems"] else 0
