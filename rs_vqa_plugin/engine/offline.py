"""No network and no telemetry where models load: the plugin answers from local files only.

ONNX Runtime's telemetry looks up a Microsoft events host every few seconds and writes a device
id and an events database under ~/.cache; only ORT_DISABLE_TELEMETRY=1 set *before* onnxruntime
is imported stops both (onnxruntime.disable_telemetry_events() afterwards stops neither: checked
with strace on onnxruntime 1.32). huggingface_hub reads its offline/telemetry switches at import
too, so `keep_offline()` runs before our first import of either library.

Ray (eval/batch --ray): usage stats off (RAY_USAGE_STATS_ENABLED=0, read by every Ray process).
A cluster we start ourselves (`--ray local`) gets `local_ray_environment()` too: checked with
strace on Ray 2.60, its head still asks the cloud metadata hosts (169.254.169.254 and a DNS
look-up of metadata.google.internal) at start with usage stats off, finds its node address by a
UDP connect to 8.8.8.8, and writes a token to ~/.ray/auth_token.
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
    "RAY_USAGE_STATS_ENABLED": "0",
}
# Where a local cluster's HTTP goes: nowhere (the discard port of this machine). Ray's gRPC ignores
# HTTP proxies (grpc.enable_http_proxy=0), so only the head's cloud metadata probes meet it.
NO_HTTP = "http://127.0.0.1:9"
RAY_AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def keep_offline() -> None:
    """Set the switches for this process (and the processes it starts). Forced, not defaulted: we
    never download, so a user's HF_HUB_OFFLINE=0 must not turn the network on for us."""
    os.environ.update(OFFLINE_ENVIRONMENT)
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:
        # Imported before us (e.g. by another QGIS plugin): its switches were read already.
        hub.HF_HUB_OFFLINE = True
        hub.HF_HUB_DISABLE_TELEMETRY = True


def local_ray_environment() -> Dict[str, str]:
    """Environment of a Ray cluster started on this machine for one run (set before `import ray`:
    Ray reads some of it at import, and its processes inherit it at start)."""
    import secrets

    env = {
        # One node on the loopback address: nothing listens on the network, and the node address
        # is not found by a UDP connect to 8.8.8.8 (Ray's switch for single-node platforms).
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "http_proxy": NO_HTTP, "HTTP_PROXY": NO_HTTP, "https_proxy": NO_HTTP,
        "HTTPS_PROXY": NO_HTTP, "no_proxy": "", "NO_PROXY": "",
    }
    if not any(name in os.environ for name in RAY_AUTH_VARIABLES):
        # Token authentication kept on, with a token that lives in the run's memory only.
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    return env
