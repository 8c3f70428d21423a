"""The engine worker as QGIS runs it: a real subprocess speaking line-delimited JSON (issue 8)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.rasters import make_rgb_scene

pytestmark = pytest.mark.subprocess

REPO = Path(__file__).resolve().parent.parent

# Registered once per session as a plugin, so both modules share one tiny bundle build.
pytest_plugins = ["tests.fixtures_models"]


class WorkerPipe:
    """A worker subprocess with a reader thread collecting its events."""

    def __init__(self, heartbeat: float = 0.2):
        env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rs_vqa_plugin", "worker", "--heartbeat", str(heartbeat)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=str(REPO), env=env, bufsize=1)
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.seen = []
        self.stray = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.stray.append(line)   # anything not JSON on stdout breaks the protocol

    def send(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def wait_for(self, predicate, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(event)
            if predicate(event):
                return event
        raise AssertionError(f"no matching event within {timeout} s; seen: {self.seen[-10:]}")

    def final(self, request_id, timeout=60.0):
        return self.wait_for(lambda e: e["id"] == request_id and e["event"] in
                             ("answer", "error", "cancelled", "loaded"), timeout)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.send(id="bye", cmd="shutdown")
                self.proc.wait(10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
        assert not self.stray, f"non-protocol output on stdout: {self.stray[:3]}"


@pytest.fixture
def worker():
    pipe = WorkerPipe()
    yield pipe
    pipe.close()


def test_protocol_errors_are_events_and_the_worker_survives(worker, tmp_path):
    worker.wait_for(lambda e: e["event"] == "ready", 20)
    worker.proc.stdin.write("this is not json\n")
    worker.send(id="u1", cmd="fly")
    worker.send(id="m1", cmd="load", model=str(tmp_path / "no-such-bundle"))
    bad = worker.wait_for(lambda e: e["id"] == "u1")
    assert bad["event"] == "error" and "Unknown command" in bad["message"]
    missing = worker.final("m1")
    assert missing["event"] == "error" and missing["kind"] == "BundleError"
    assert "no-such-bundle" in missing["message"] and "does not exist" in missing["message"]
    worker.send(id="a1", cmd="ask", raster="x.tif", question="q")
    assert "No model is loaded" in worker.final("a1")["message"]
    beats = [worker.wait_for(lambda e: e["event"] == "heartbeat", 5) for _ in range(2)]
    assert beats[1]["time"] > beats[0]["time"] and beats[1]["loaded"] is False
    worker.send(id="p1", cmd="ping")
    worker.wait_for(lambda e: e["id"] == "p1" and e["event"] == "pong")
    worker.send(id="s1", cmd="shutdown")
    worker.wait_for(lambda e: e["id"] == "s1" and e["event"] == "shutdown")
    assert worker.proc.wait(10) == 0


def test_broken_bundle_gives_a_bundle_error(worker, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{ not json")
    worker.send(id="b1", cmd="load", model=str(broken))
    event = worker.final("b1", 60)
    assert event["event"] == "error" and event["kind"] == "BundleError", event
    assert "manifest.json" in event["message"]


def test_a_load_chooses_the_llm_dtype_and_refuses_an_unknown_one(worker, tiny_bundle, tmp_path):
    raster = make_rgb_scene(tmp_path / "scene.tif", size=(500, 400), seed=3)
    worker.send(id="d0", cmd="load", model=str(tiny_bundle), device="cpu", dtype="fp8")
    refused = worker.final("d0", 60)
    assert refused["event"] == "error" and "'fp8'" in refused["message"] and "auto" in refused["message"]
    worker.send(id="d1", cmd="load", model=str(tiny_bundle), device="cpu", dtype="bfloat16")
    assert worker.final("d1", 120)["event"] == "loaded"
    worker.send(id="d2", cmd="ask", raster=str(raster), question="What is here?",
                options={"max_new_tokens": 2, "mode": "thumbnail"})
    final = worker.final("d2", 120)
    assert final["event"] == "answer", final
    assert final["answer"]["trace"]["llm_dtype"] == "bfloat16"


def test_load_then_ask_streams_tokens_then_answers_and_cancels(worker, tiny_bundle, tmp_path):
    raster = make_rgb_scene(tmp_path / "scene.tif", size=(700, 500), seed=3)
    worker.send(id="l1", cmd="load", model=str(tiny_bundle), device="cpu")
    loaded = worker.final("l1", 120)
    assert loaded["event"] == "loaded", loaded
    assert loaded["providers"] and all(p.endswith("ExecutionProvider")
                                       for p in loaded["providers"].values())
    assert loaded["device"] == "cpu"

    worker.send(id="q1", cmd="ask", raster=str(raster), question="What is in the image?",
                options={"max_new_tokens": 8})
    events = []
    final = worker.wait_for(lambda e: e["id"] == "q1" and (events.append(e) or
                            e["event"] in ("answer", "error", "cancelled")), 120)
    assert final["event"] == "answer", final
    kinds = [e["event"] for e in events]
    stages = {e["stage"] for e in events if e["event"] == "progress"}
    assert {"read", "encode", "score", "generate"} <= stages
    assert "load" not in stages   # the model stayed warm
    tokens = "".join(e["text"] for e in events if e["event"] == "token")
    assert kinds.index("token") < kinds.index("answer")
    answer = final["answer"]
    assert answer["text"].strip() == tokens.strip()
    assert answer["heat_cells"] and answer["question"] == "What is in the image?"

    # Cancel mid-run: on the first encode progress the stdin thread flags the running ask.
    worker.send(id="q2", cmd="ask", raster=str(raster), question="Count the roofs.",
                options={"max_new_tokens": 400, "mode": "full"})
    worker.wait_for(lambda e: e["id"] == "q2" and e["event"] == "progress", 60)
    sent = time.monotonic()
    worker.send(id="c2", cmd="cancel", target="q2")
    stopped = worker.final("q2", 30)
    assert stopped["event"] == "cancelled", stopped
    assert time.monotonic() - sent < 5.0
    # ...and the worker answers the next question.
    worker.send(id="q3", cmd="ask", raster=str(raster), question="Any water?",
                options={"max_new_tokens": 4})
    assert worker.final("q3", 120)["event"] == "answer"


def test_an_ask_that_loads_its_model_streams_each_event_once(worker, tiny_bundle, tmp_path):
    # As the chat dock asks: the first ask names its model, so the worker loads it on the way.
    raster = make_rgb_scene(tmp_path / "scene.tif", size=(400, 300), seed=4)
    for request_id in ("d1", "d2"):
        worker.send(id=request_id, cmd="ask", raster=str(raster), question="What is in the image?",
                    model=str(tiny_bundle), device="cpu", options={"max_new_tokens": 6})
        final = worker.final(request_id, 120)
        if final["event"] == "loaded":
            final = worker.wait_for(lambda e: e["id"] == request_id and
                                    e["event"] in ("answer", "error", "cancelled"), 120)
        assert final["event"] == "answer", final
    worker.send(id="p9", cmd="ping")
    worker.wait_for(lambda e: e["id"] == "p9" and e["event"] == "pong")
    for request_id in ("d1", "d2"):
        events = [e for e in worker.seen if e["id"] == request_id]
        tokens = [e["text"] for e in events if e["event"] == "token"]
        answer = next(e["answer"] for e in events if e["event"] == "answer")
        assert tokens and "".join(tokens) == answer["text"], (tokens, answer["text"])
        progress = [(e["stage"], e["fraction"], e["message"]) for e in events
                    if e["event"] == "progress"]
        assert len(progress) == len(set(progress)), progress   # none sent twice
        # Nothing arrives under an ask's id once it has answered (d2's events stay d2's).
        assert events[-1]["event"] == "answer", events[-3:]
    assert ("load", 0.0) in {(e["stage"], e["fraction"]) for e in worker.seen
                             if e["id"] == "d1" and e["event"] == "progress"}
