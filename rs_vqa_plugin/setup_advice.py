"""How to get a working runtime, in terms of what this installation has: the settings dialog's
"Set up runtime" for a plugin installed from its zip, `./build.sh setup` in a source checkout.

Qt-free: the engine, the worker and the commands word their set-up errors with it too."""

from __future__ import annotations

from .paths import repo_root

SETTINGS_MENU = "Raster › RS-VQA › Settings…"


def is_source_checkout() -> bool:
    """True beside the sources (build.sh next to the package); False in an installed plugin."""
    return (repo_root() / "build.sh").is_file()


def runtime_setup_advice(gpu: bool = False) -> str:
    """What to do, as a clause to follow a colon: 'click "Set up runtime" in …'."""
    if is_source_checkout():
        return (f"run ./build.sh setup{' --gpu' if gpu else ''} in {repo_root()}, or use "
                f"\"Set up runtime\" in QGIS ({SETTINGS_MENU})")
    if gpu:
        return ("install the packages of requirements-gpu.txt (in the plugin folder) into the "
                "runtime Python with its pip, or choose the CPU device in RS-VQA's settings")
    return (f"in QGIS open {SETTINGS_MENU} and click \"Set up runtime\", or Browse… to a Python "
            "that has the rs-vqa stack (torch, transformers, onnxruntime)")
