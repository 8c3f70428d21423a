"""ONNX Runtime sessions with an honest provider choice (auto / cpu / cuda)."""

from __future__ import annotations

from typing import List, Tuple

from ..setup_advice import runtime_setup_advice
from .errors import BundleError, Cancelled, RuntimeSetupError
from .offline import keep_offline

DEVICES = ("auto", "cpu", "cuda")


def resolve_providers(device: str = "auto") -> List[str]:
    """Providers to ask for, best first. 'auto' asks for CUDA only where this onnxruntime has it."""
    if device not in DEVICES:
        raise RuntimeSetupError(f"Unknown device '{device}': choose one of {', '.join(DEVICES)}.")
    keep_offline()   # before onnxruntime loads: its telemetry starts at import
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeSetupError("onnxruntime is not installed in this Python: "
                                f"{runtime_setup_advice()}.") from exc
    available = ort.get_available_providers()
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise RuntimeSetupError("CUDA was requested but this onnxruntime has no CUDA provider: "
                                    f"{runtime_setup_advice(gpu=True)}.")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(path, device: str = "auto", threads: int = 0) -> Tuple[object, str]:
    """Return (InferenceSession, provider that really runs). onnxruntime-gpu silently falls back
    to CPU when CUDA cannot start, so the answer comes from get_providers(), not from the request."""
    providers = resolve_providers(device)   # sets the offline switches before the import
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except _model_errors() as exc:   # a graph it cannot run (device failures are not caught)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"ONNX Runtime cannot load {path} ({first[:300]}): the file does not "
                          "match this runtime or is damaged; re-create the bundle with "
                          "`python -m rs_vqa_plugin convert`.") from exc
    actual = session.get_providers()[0]
    if device == "cuda" and actual != "CUDAExecutionProvider":
        raise RuntimeSetupError(f"CUDA was requested for {path} but ONNX Runtime fell back to "
                                f"{actual}: check the CUDA/cuDNN libraries or choose the CPU device.")
    return session, actual


def run_session(session, outputs: List[str], feeds: dict, cancel=None) -> list:
    """session.run, interruptible: a cancel from another thread sets the run's terminate flag,
    ONNX Runtime stops at its next node and the run raises Cancelled. The session stays usable."""
    if cancel is None:
        return session.run(outputs, feeds)
    import onnxruntime as ort

    cancel.raise_if_cancelled()
    run_options = ort.RunOptions()   # one per run: its terminate flag never resets

    def terminate() -> None:
        run_options.terminate = True

    with cancel.on_cancel(terminate):
        try:
            return session.run(outputs, feeds, run_options)
        except Exception as exc:   # ORT raises its own RuntimeException on terminate
            if cancel.cancelled:
                raise Cancelled() from None
            raise


def _model_errors() -> tuple:
    """ONNX Runtime's exception types for a model it cannot read or run."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile",
             "NotImplemented", "NoModel")
    return tuple(getattr(state, name) for name in names if hasattr(state, name))
