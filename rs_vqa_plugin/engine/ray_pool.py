"""Work units answered by a pool of Ray actors, each an AnswerWorker (one loaded model).

Ray (Core actors, pinned in requirements.txt) is imported only here, and only when a run asks for
it. Units of one raster go to one actor, one after the other (its tile cache serves the later
ones); the next raster goes to whichever actor is about to run dry. Outcomes come back as they
complete. An actor that dies fails the units it held (recorded, retried by the next run) and is
replaced, a few times at most.
"""

from __future__ import annotations

import math
import os
import sys
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

from .answer_worker import AnswerWorker, Outcome, WorkUnit
from .errors import InputError, RuntimeSetupError

# Threads (and CPUs reserved) per actor on a cluster without GPUs, unless told.
CPU_THREADS_PER_ACTOR = 4
# Units queued on an actor before it runs dry: its next raster is sent while it answers the last
# question of the current one, so it never waits for the driver.
QUEUE_LOW_WATER = 1


@dataclass
class RaySettings:
    address: str                          # local | auto | ray://host:port
    actors: Optional[int] = None          # None: one per GPU, else CPUs / threads
    gpus_per_actor: Optional[float] = None   # None: 1 where the cluster has GPUs, else 0
    threads_per_actor: Optional[int] = None  # None: CPUs / actors (GPU) or 4 (CPU)
    cpus_per_actor: Optional[float] = None   # None: threads_per_actor (fractions share cores)
    max_replacements: int = 2             # actors re-created after deaths, in all

    def check(self) -> None:
        if not (self.address in ("local", "auto") or self.address.startswith("ray://")):
            raise InputError(f"--ray {self.address}: give local (a cluster on this machine), auto "
                             "(the cluster of RAY_ADDRESS or `ray start`) or ray://host:port.")
        for name, value, low in (("--actors", self.actors, 1),
                                 ("--threads-per-actor", self.threads_per_actor, 1)):
            if value is not None and value < low:
                raise InputError(f"{name} must be at least {low}, not {value}.")
        for name, value in (("--gpus-per-actor", self.gpus_per_actor),
                            ("--cpus-per-actor", self.cpus_per_actor)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise InputError(f"{name} must be 0 or more, not {value}.")


def _ray():
    try:
        import ray
    except ImportError as exc:
        from ..setup_advice import runtime_setup_advice

        raise RuntimeSetupError(f"--ray needs Ray (ray==2.60.0, in requirements.txt), which this "
                                f"Python lacks: {runtime_setup_advice()}.") from exc
    return ray


def connect(address: str, num_cpus: Optional[float] = None,
            num_gpus: Optional[float] = None) -> Callable[[], None]:
    """Join or start the cluster; returns what ends this connection (and a cluster started here).

    `local` reuses a Ray session this process already has (a test's), else starts one with this
    machine's CPUs and GPUs (or num_cpus / num_gpus), kept offline (engine/offline.py)."""
    import logging

    from .offline import local_ray_environment

    if address == "local":
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            return lambda: None
        # Ray starts workers 15 nicer than itself; here the actors are the whole job, and at
        # that priority they got 5% of a core beside one other niced job (measured).
        changed = dict(local_ray_environment(), RAY_worker_niceness="0")
        saved = {name: os.environ.get(name) for name in changed}
        os.environ.update(changed)
        ray = _ray()
        _reread_auth_settings()
        try:
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING)
        except BaseException:
            _restore(saved)
            _reread_auth_settings()
            raise

        def stop() -> None:
            ray.shutdown()
            _restore(saved)
            _reread_auth_settings()
        return stop
    ray = _ray()
    if ray.is_initialized():
        raise InputError(f"--ray {address}: this process is already connected to a Ray cluster.")
    target = os.environ.get("RAY_ADDRESS", "") if address == "auto" else address[len("ray://"):]
    _check_reachable(address, target)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = os.environ.get("RAY_ADDRESS") if address == "auto" else address
        raise InputError(
            f"--ray {address}: no Ray cluster could be reached{f' at {where}' if where else ''} "
            f"({str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__})."
            " Start one with `ray start --head` (and `ray start --address HEAD:6379` on the other "
            "machines), set RAY_ADDRESS, or use --ray local.") from None
    return ray.shutdown


def _check_reachable(address: str, target: str) -> None:
    """Fail at once when nothing listens at host:port (Ray itself retries for minutes)."""
    import socket

    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return   # `auto` without RAY_ADDRESS: Ray looks for a `ray start` on this machine
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise InputError(f"--ray {address}: nothing answers at {target} ({exc.strerror or exc}). "
                         "Start the head with `ray start --head` (its port, 6379 by default; the "
                         "client port for ray://, 10001), check RAY_ADDRESS, or use --ray local.") from None


def _reread_auth_settings() -> None:
    """Ray reads RAY_AUTH_MODE and the token once, when it is imported (by anything in this
    process): make it read them again after we set them, and after we put them back."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _restore(saved: Dict[str, Optional[str]]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def plan_actors(settings: RaySettings, resources: dict) -> Tuple[int, float, float, int]:
    """(actors, GPUs, CPUs, threads per actor) for a cluster with these total resources."""
    cpus = float(resources.get("CPU", 0))
    gpus = float(resources.get("GPU", 0))
    gpus_per = settings.gpus_per_actor
    if gpus_per is None:
        gpus_per = 1.0 if gpus >= 1 else 0.0
    if gpus_per > 0 and gpus < gpus_per:
        raise InputError(f"--gpus-per-actor {gpus_per:g}: the cluster has {gpus:g} GPUs; use "
                         "--gpus-per-actor 0 to run on CPUs.")
    if gpus_per > 0:
        actors = settings.actors or max(1, int(gpus // gpus_per))
        threads = settings.threads_per_actor or max(1, int(cpus // actors))
    else:
        threads = settings.threads_per_actor or max(1, min(CPU_THREADS_PER_ACTOR, int(cpus)))
        actors = settings.actors or max(1, int(cpus // threads))
    cpus_per = threads if settings.cpus_per_actor is None else settings.cpus_per_actor
    if actors * cpus_per > cpus + 1e-9 or actors * gpus_per > gpus + 1e-9:
        raise InputError(
            f"{actors} actors with {cpus_per:g} CPUs and {gpus_per:g} GPUs each do not fit the "
            f"cluster ({cpus:g} CPUs, {gpus:g} GPUs): lower --actors, --cpus-per-actor or "
            "--gpus-per-actor.")
    return actors, gpus_per, cpus_per, threads


class RayPool:
    """Actors holding AnswerWorkers; run(groups) yields Outcomes as they complete."""

    def __init__(self, settings: RaySettings, worker_kwargs: dict,
                 on_status: Optional[Callable[[str], None]] = None):
        ray = _ray()
        self._ray = ray
        self.on_status = on_status or (lambda _message: None)
        actors, gpus, cpus, threads = plan_actors(settings, ray.cluster_resources())
        self.plan = {"actors": actors, "gpus_per_actor": gpus, "cpus_per_actor": cpus,
                     "threads_per_actor": threads}
        from .offline import OFFLINE_ENVIRONMENT

        env = dict(OFFLINE_ENVIRONMENT, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self._actor_class = ray.remote(AnswerWorker).options(
            num_cpus=cpus, num_gpus=gpus, runtime_env={"env_vars": env})
        self._worker_kwargs = dict(worker_kwargs, threads=threads)
        self.replacements_left = settings.max_replacements
        self.actors = [self._start() for _ in range(actors)]
        self.workers = self._describe(self.actors)

    def _start(self):
        return self._actor_class.remote(**self._worker_kwargs)

    def _describe(self, actors) -> List[dict]:
        """Wait for the actors' models to load; a load failure is the run's error."""
        ray = self._ray
        try:
            return ray.get([actor.describe.remote() for actor in actors])
        except ray.exceptions.RayActorError as exc:
            self.stop()
            raise RuntimeSetupError(
                "A Ray actor could not load the model: "
                f"{_cause(exc)}. The model folder and the rasters must be at the same path on "
                "every node of the cluster, with this project's Python set-up there.") from None

    def run(self, groups: Iterable[List[WorkUnit]]) -> Iterator[Outcome]:
        ray = self._ray
        queue: Deque[List[WorkUnit]] = deque(groups)
        pending: Dict[object, Tuple[int, object, WorkUnit]] = {}
        queued = [0] * len(self.actors)

        def feed(index: int) -> None:
            while queue and queued[index] <= QUEUE_LOW_WATER:
                for unit in queue.popleft():
                    actor = self.actors[index]
                    pending[actor.answer.remote(unit)] = (index, actor, unit)
                    queued[index] += 1

        for index in range(len(self.actors)):
            feed(index)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            index, actor, unit = pending.pop(ready[0])
            queued[index] -= 1
            try:
                outcome = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:
                outcome = Outcome(unit, error=f"the Ray actor answering it died ({_cause(exc)})")
                self._replace(index, actor, exc)
            except ray.exceptions.RayTaskError as exc:   # Cancelled in the actor, or our bug
                outcome = Outcome(unit, error=f"{_cause(exc)}")
            feed(index)
            yield outcome

    def _replace(self, index: int, dead, exc) -> None:
        """A fresh actor in place of a dead one (once per death), or the run's error."""
        if self.actors[index] is not dead:
            return   # replaced at its first failed unit already
        if self.replacements_left <= 0:
            raise RuntimeSetupError(f"Ray actors keep dying ({_cause(exc)}); the answers so far "
                                    "are kept, the next run resumes after them.")
        self.replacements_left -= 1
        self.on_status(f"a Ray actor died ({_cause(exc)}); starting another")
        self.actors[index] = self._start()
        self.workers[index] = self._describe([self.actors[index]])[0]

    def stop(self) -> None:
        """End the actors (their GPUs and memory are freed at once); queued units are dropped."""
        for actor in getattr(self, "actors", []):
            try:
                self._ray.kill(actor)
            except Exception:   # already gone
                pass
        self.actors = []


def _cause(exc) -> str:
    text = str(getattr(exc, "cause", None) or exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__
