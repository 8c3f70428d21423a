"""`worker`: serve the engine over line-delimited JSON on stdin/stdout (used by the QGIS dock)."""

from __future__ import annotations

HELP = "serve the engine to the QGIS plugin: JSON requests on stdin, events on stdout"


def add_arguments(parser):
    parser.add_argument("--heartbeat", type=float, default=1.0,
                        help="seconds between heartbeat events (default 1)")


def run(args) -> int:
    import os
    import sys

    from ..engine.worker import main

    code = main(heartbeat_seconds=args.heartbeat)
    # Leave at once: tearing down torch/ONNX Runtime thread pools at interpreter exit can take
    # seconds, and the client is already waiting for this process to end.
    sys.stderr.flush()
    os._exit(code)
