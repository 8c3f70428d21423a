"""No network and no telemetry where models load: the plugin answers from local files only.

ONNX Runtime's telemetry looks up a Microsoft events host every few seconds and writes a device
id and an events database under ~/.cache; only ORT_DISABLE_TELEMETRY=1 set *before* onnxruntime
is imported stops both (onnxruntime.disable_telemetry_events() afterwards stops neither: checked
with strace on onnxruntime 1.32). huggingface_hub reads its offline/telemetry switches at import
too, so `keep_offline()` runs before our first import of either library.
"""

from __future__ import annotations

import os
import sys
from typing import Dict

OFFLINE_ENVIRONMENT: Dict[str, str] = {
    "ORT_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
}


def keep_offline() -> None:
    """Set the switches for this process (and the processes it starts). Forced, not defaulted: we
    never download, so a user's HF_HUB_OFFLINE=0 must not turn the network on for us."""
    os.environ.update(OFFLINE_ENVIRONMENT)
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:
        # Imported before us (e.g. by another QGIS plugin): its switches were read already.
        hub.HF_HUB_OFFLINE = True
        hub.HF_HUB_DISABLE_TELEMETRY = True
