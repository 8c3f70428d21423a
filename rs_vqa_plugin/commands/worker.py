"""`worker`: serve the engine over line-delimited JSON on stdin/stdout (used by the QGIS dock)."""

from __future__ import annotations

HELP = "serve the engine to the QGIS plugin: JSON requests on stdin, events on stdout"


def add_arguments(parser):
    parser.add_argument("--heartbeat", type=float, default=1.0,
                        help="seconds between heartbeat events (default 1)")


def run(args) -> int:
    from ..engine.worker import main

    return main(heartbeat_seconds=args.heartbeat)
