"""Silence library chatter (progress bars, exporter notices) in our command-line tools."""

from __future__ import annotations

import logging
import warnings


def quiet_model_libraries() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    # torch.onnx reports optional torchvision ops it skips; irrelevant to our graphs.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="torch.onnx")
