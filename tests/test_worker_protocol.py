"""The worker protocol under bad input: any bytes get an answer and the worker reads on, cancel
still works after a bad line, and bad asks are messages, not tracebacks.
A real worker subprocess, real tiny models."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rs_vqa_plugin.engine.worker import MAX_REQUEST_BYTES
from tests.rasters import make_rgb_scene
from tests.test_worker import WorkerPipe

pytestmark = pytest.mark.subprocess

pytest_plugins = ["tests.fixtures_models"]
ENDS = ("answer", "error", "cancelled")


@pytest.fixture
def worker():
    pipe = WorkerPipe()
    pipe.wait_for(lambda e: e["event"] == "ready", 60)
    yield pipe
    pipe.close()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_rgb_scene(tmp_path_factory.mktemp("protocol") / "scene.tif", size=(700, 500),
                          seed=3)


def _raw(worker, data: bytes) -> None:
    worker.proc.stdin.buffer.write(data)
    worker.proc.stdin.flush()


def _end(worker, request_id, timeout=120):
    return worker.wait_for(lambda e: e["id"] == request_id and e["event"] in ENDS, timeout)


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def test_any_bytes_get_an_error_and_the_worker_reads_on(worker):
    _raw(worker, b'{"id": "x1", "cmd": "ping", "note": "caf\xe9"}\n')
    bad = worker.wait_for(lambda e: e["id"] == "x1", 10)
    assert bad["event"] == "error" and bad["kind"] == "ProtocolError"
    assert "not UTF-8 (byte 0xe9" in bad["message"]
    _raw(worker, b"\xc3\x28\n5\n")
    for _ in range(2):
        assert worker.wait_for(lambda e: e["event"] == "error", 10)["kind"] == "ProtocolError"
    _raw(worker, b'{"id": "big", "pad": "' + b"a" * MAX_REQUEST_BYTES + b'"}\n')
    big = worker.wait_for(lambda e: e["event"] == "error", 30)
    assert "longer than 16 MiB" in big["message"]
    worker.send(id="c1", cmd="cancel", target="nobody")
    unknown = worker.wait_for(lambda e: e["id"] == "c1", 10)
    assert unknown["event"] == "error" and "Nothing to cancel" in unknown["message"]
    worker.send(id="nobody", cmd="ping")   # an id cancelled while unknown is not poisoned
    assert worker.wait_for(lambda e: e["id"] == "nobody", 10)["event"] == "pong"
    worker.send(id="s1", cmd="shutdown")
    worker.wait_for(lambda e: e["id"] == "s1" and e["event"] == "shutdown", 10)
    assert worker.proc.wait(10) == 0


def test_after_a_bad_line_a_running_ask_is_still_cancelled_at_once(worker, tiny_bundle, scene):
    # Before, the first line that was not UTF-8 ended the stdin reader: cancel and shutdown were
    # never read again while heartbeats went on.
    worker.send(id="l1", cmd="load", model=str(tiny_bundle), device="cpu")
    assert worker.final("l1", 120)["event"] == "loaded"
    _raw(worker, b"\xff\xfe not a request\n")
    worker.send(id="a3", cmd="ask", raster=str(scene), question="Count the roofs.",
                options={"max_new_tokens": 400, "mode": "full"})
    worker.wait_for(lambda e: e["id"] == "a3" and e["event"] == "progress", 60)
    sent = time.monotonic()
    worker.send(id="c3", cmd="cancel", target="a3")
    assert _end(worker, "a3", 30)["event"] == "cancelled"
    assert time.monotonic() - sent < 5.0


def test_bad_asks_are_messages_and_a_huge_question_leaves_no_memory(worker, tiny_bundle, scene):
    worker.send(id="l1", cmd="load", model=str(tiny_bundle), device="cpu")
    assert worker.final("l1", 120)["event"] == "loaded"
    worker.send(id="ok", cmd="ask", raster=str(scene), question="What?",
                options={"max_new_tokens": 2})
    assert _end(worker, "ok")["event"] == "answer"
    before = _rss_mb(worker.proc.pid)

    for request_id, fields, said in [
        ("b1", {"question": "What?", "options": {"alpha": "lots"}}, "alpha must be a number"),
        ("b2", {"question": "What?", "options": [1, 2]}, "options must be a JSON object"),
        ("b3", {"question": {"q": 1}}, "must be text"),
        ("b4", {"question": "What \ud800 here?"}, "U+D800"),
        ("b5", {"question": "a " * 5_000_000}, "characters long"),
    ]:
        worker.send(id=request_id, cmd="ask", raster=str(scene), **fields)
        event = _end(worker, request_id)
        assert event["event"] == "error" and event["kind"] == "InputError", event
        assert said in event["message"]
    # The 10 MB question was refused before tokenising (which kept ~1.4 GB here).
    assert _rss_mb(worker.proc.pid) - before < 150
    worker.send(id="ok2", cmd="ask", raster=str(scene), question="Still there?",
                options={"max_new_tokens": 2})
    assert _end(worker, "ok2")["event"] == "answer"
