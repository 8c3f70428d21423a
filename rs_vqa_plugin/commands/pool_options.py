"""Options shared by `eval` and `batch`: where the answering runs (this process, or Ray actors),
and the pool of answer workers built from them."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "on a Ray cluster", "one model per actor; the questions of one raster go to one actor")
    group.add_argument("--ray", metavar="ADDRESS", default=None,
                       help="answer on Ray: local (a cluster on this machine, its CPUs and GPUs), "
                            "auto (the cluster of RAY_ADDRESS or `ray start`) or ray://host:port")
    group.add_argument("--actors", type=int, default=None,
                       help="actors, each with the model loaded (default: one per GPU, else one "
                            "per --threads-per-actor CPUs)")
    group.add_argument("--gpus-per-actor", type=float, default=None,
                       help="GPUs per actor (default: 1 where the cluster has GPUs, else 0)")
    group.add_argument("--threads-per-actor", type=int, default=None,
                       help="CPU threads of each actor's runtimes (default: 4 on CPUs; CPUs / "
                            "actors with GPUs)")
    group.add_argument("--cpus-per-actor", type=float, default=None,
                       help="CPUs Ray reserves per actor (default: --threads-per-actor; a "
                            "fraction lets actors share cores)")


def ray_settings(args):
    from ..engine.ray_pool import RaySettings

    if args.ray is None:
        for name in ("actors", "gpus_per_actor", "threads_per_actor", "cpus_per_actor"):
            if getattr(args, name) is not None:
                from ..engine.errors import InputError

                raise InputError(f"--{name.replace('_', '-')} is for Ray runs: add --ray local "
                                 "(or auto, or ray://host:port).")
        return None
    settings = RaySettings(args.ray, args.actors, args.gpus_per_actor, args.threads_per_actor,
                           args.cpus_per_actor)
    settings.check()
    return settings


@contextmanager
def answer_pool(args, model, options, keep_heat_cells: bool, quiet: bool):
    """The pool the run's questions go through: one AnswerWorker here, or RayPool actors (the
    cluster joined or started for the run, and left or shut down at the end, Ctrl-C included)."""
    from ..engine.answer_worker import AnswerWorker, LocalPool

    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    worker_kwargs = dict(model_dir=str(model), options=options, device=args.device,
                         tile_cache_mb=args.tile_cache_mb, keep_heat_cells=keep_heat_cells,
                         dtype=args.dtype)
    settings = ray_settings(args)
    if settings is not None and args.device == "cpu" and settings.gpus_per_actor is None:
        settings.gpus_per_actor = 0.0     # actors that run on CPUs hold no GPU
    if settings is None:
        say(f"loading the model from {model}")
        pool = LocalPool(AnswerWorker(**worker_kwargs))
        try:
            yield pool
        finally:
            pool.stop()
        return
    from ..engine.ray_pool import RayPool, connect

    say(f"Ray: {'starting a cluster on this machine' if settings.address == 'local' else 'joining ' + settings.address}")
    disconnect = connect(settings.address)
    pool = None
    try:
        pool = RayPool(settings, worker_kwargs, on_status=say)
        plan = pool.plan
        say(f"Ray: {plan['actors']} actors ({plan['gpus_per_actor']:g} GPU, "
            f"{plan['cpus_per_actor']:g} CPU, {plan['threads_per_actor']} threads each) loaded "
            f"{model}: " + ", ".join(f"{w['worker']} {w['provider']}" for w in pool.workers))
        yield pool
    finally:
        if pool is not None:
            pool.stop()
        disconnect()
