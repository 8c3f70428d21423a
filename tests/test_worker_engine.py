"""Processing's engine in the runtime's worker process (processing/worker_engine.py): the same
answers as the in-process engine, events, cancel, errors, and a clean end. Real worker, real models."""

from __future__ import annotations

import sys

import pytest

from rs_vqa_plugin.engine.errors import BundleError, Cancelled, InputError
from rs_vqa_plugin.engine.pipeline import AskOptions, Engine
from rs_vqa_plugin.processing.worker_engine import WorkerEngine
from tests.rasters import make_rgb_scene

pytestmark = pytest.mark.subprocess

pytest_plugins = ["tests.fixtures_models"]
QUESTION = "How many ships are in the harbour?"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_rgb_scene(tmp_path_factory.mktemp("worker-scene") / "scene.tif", size=(700, 500), seed=3)


@pytest.fixture(scope="module")
def worker(tiny_bundle):
    engine = WorkerEngine(sys.executable, tiny_bundle, "cpu")
    yield engine
    engine.close()


def test_the_worker_answers_as_the_engine_does(worker, tiny_bundle, scene):
    options = AskOptions(mode="dip", max_new_tokens=3)
    events = []
    remote = worker.ask(scene, QUESTION, options, events=events.append)
    local = Engine(tiny_bundle, device="cpu").ask(scene, QUESTION, options)
    assert remote.text == local.text
    for key in ("levels", "tiles", "llm_vision_tokens", "stop_reason"):
        assert remote.trace[key] == local.trace[key], key
    assert [c.score for c in remote.heat_cells] == pytest.approx([c.score for c in local.heat_cells])
    assert {"progress", "token"} <= {e["type"] for e in events}
    assert worker.load_info["device"] == "cpu"


def test_cancel_then_the_worker_goes_on(worker, scene):
    token_holder = {}

    def cancel_on_first_event(event):
        token_holder["token"].cancel()

    from rs_vqa_plugin.engine.progress import CancelToken

    token_holder["token"] = CancelToken()
    with pytest.raises(Cancelled):
        worker.ask(scene, QUESTION, AskOptions(mode="dip", max_new_tokens=3),
                   events=cancel_on_first_event, cancel=token_holder["token"])
    assert worker.ask(scene, QUESTION, AskOptions(mode="thumbnail", max_new_tokens=1)).text is not None


def test_errors_come_back_as_engine_errors(worker, tmp_path):
    with pytest.raises(InputError, match="missing.tif"):
        worker.ask(tmp_path / "missing.tif", QUESTION, AskOptions(mode="thumbnail"))
    with pytest.raises(BundleError, match="does not exist"):
        WorkerEngine(sys.executable, tmp_path / "no-model", "cpu")


def test_close_ends_the_process(tiny_bundle):
    engine = WorkerEngine(sys.executable, tiny_bundle, "cpu")
    engine.close()
    assert engine._process.poll() is not None


def test_the_worker_keeps_tile_encodings_between_asks_and_takes_their_bound(worker, scene):
    from rs_vqa_plugin.engine.tile_cache import DEFAULT_MB

    options = AskOptions(mode="grid", max_new_tokens=2)
    worker.set_tile_cache_mb(0)          # empty, whatever earlier tests left
    worker.set_tile_cache_mb(1.5)
    first = worker.ask(scene, QUESTION, options)
    second = worker.ask(scene, "What colour is the largest roof?", options)
    assert second.trace["tiles_from_cache"] == first.trace["tiles_encoded"] > 0
    assert second.trace["tiles_encoded"] == 0
    assert second.trace["tile_cache"]["limit_mb"] == 1.5
    worker.set_tile_cache_mb(0)
    assert worker.ask(scene, QUESTION, options).trace["tiles_from_cache"] == 0
    with pytest.raises(InputError, match="tile_cache_mb must be 0"):
        worker.set_tile_cache_mb(-1)
    worker.set_tile_cache_mb(DEFAULT_MB)


def test_the_token_events_concatenated_equal_the_answer(worker, scene):
    # What the dock and Processing stream is the answer itself, to the character (no stray space).
    for question, tokens in ((QUESTION, 12), ("Is there water?", 5)):
        events = []
        answer = worker.ask(scene, question, AskOptions(mode="dip", max_new_tokens=tokens),
                            events=events.append)
        streamed = "".join(e["text"] for e in events if e["type"] == "token")
        assert answer.text and streamed == answer.text


def test_trimmed_tokens_hold_edge_space_and_pass_inner_space():
    from rs_vqa_plugin.engine.progress import TrimmedTokens

    out = []
    stream = TrimmedTokens(out.append)
    for piece in ("  ", " two", " ships", " ", " at", " quay ", " \n"):
        stream(piece)
    assert "".join(out) == "two ships  at quay"


def test_a_hung_worker_is_ended_and_reported_and_the_next_run_gets_a_fresh_one(tiny_bundle, scene):
    # Processing's path had no hang detection: a frozen worker (SIGSTOP: no heartbeat, no answer)
    # held the run for ever. Now it is ended after the heartbeat timeout, with the dock's message.
    import os
    import signal
    import time

    from rs_vqa_plugin.engine.errors import RuntimeSetupError

    engine = WorkerEngine(sys.executable, tiny_bundle, "cpu", heartbeat_timeout_s=2.0)
    try:
        os.kill(engine._process.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(RuntimeSetupError, match="stopped responding and was ended") as caught:
            engine.ask(scene, QUESTION, AskOptions(mode="thumbnail", max_new_tokens=1))
        assert time.monotonic() - started < 10
        assert "QGIS is fine" in str(caught.value) and "no heartbeat" in str(caught.value)
        assert not engine.alive
    finally:
        engine.close()
