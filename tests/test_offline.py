"""No network and nothing written under ~/.cache when a question is answered (issue: "Nothing
lost, nothing leaked"): ONNX Runtime's telemetry (DNS look-ups of a Microsoft events host every
few seconds, a device id and an events database under ~/.cache) and huggingface_hub's must stay
off, whatever the caller's environment says. A `--ray local` run talks to its own cluster over
the loopback address only: no usage stats, no cloud metadata probes, no token under ~/.ray.

Each run is a subprocess with a fresh HOME and none of the offline switches in its environment,
traced with strace (system calls: C-level look-ups in ONNX Runtime's own threads too). A control
run of plain onnxruntime in the same harness shows that both checks catch the telemetry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rs_vqa_plugin.engine.offline import OFFLINE_ENVIRONMENT
from tests.rasters import make_rgb_scene

pytestmark = pytest.mark.subprocess

pytest_plugins = ["tests.fixtures_models"]
REPO = Path(__file__).resolve().parent.parent
# ONNX Runtime's first telemetry look-up comes ~9 s after import; the worker idles past that.
IDLE_SECONDS = 14.0


def _strace_works() -> bool:
    if not shutil.which("strace"):
        return False
    # ptrace may be forbidden (some containers): then strace cannot trace anything.
    return subprocess.run(["strace", "-f", "-o", os.devnull, "true"],
                          capture_output=True).returncode == 0


STRACE = _strace_works()


def _environment(home: Path) -> dict:
    # CI=true also turns ONNX Runtime's telemetry off (checked: no device id is written), so it is
    # dropped too: the checks must hold, and the control must show telemetry, outside CI as well.
    env = {k: v for k, v in os.environ.items()
           if k not in OFFLINE_ENVIRONMENT and k not in ("XDG_CACHE_HOME", "HF_HOME", "CI")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), QT_QPA_PLATFORM="offscreen")
    return env


def _traced(command, trace: Path) -> list:
    """`command` under strace (network system calls of every thread and child) when it works."""
    if not STRACE:
        return list(command)
    return ["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=%network", "-o", str(trace), *command]


def _internet_calls(trace: Path) -> list:
    """Socket calls on IPv4/IPv6 (DNS look-ups included); local AF_UNIX sockets are fine."""
    if not STRACE:
        return []
    return [line for line in trace.read_text().splitlines() if "AF_INET" in line]


LOOPBACK = ('"127.0.0.1"', '"::1"', '"::ffff:127.0.0.1"')


def _off_machine_calls(trace: Path) -> list:
    """Connects, sends and binds to an IP address other than this machine's loopback (a Ray
    cluster's processes talk to each other over TCP on the loopback address)."""
    return [line for line in _internet_calls(trace)
            if ("connect(" in line or "sendto(" in line or "bind(" in line)
            and ("_addr=" in line or "inet_pton(" in line) and not any(a in line for a in LOOPBACK)]


def _written_under(home: Path) -> list:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*"))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_rgb_scene(tmp_path_factory.mktemp("offline") / "scene.tif", size=(300, 200), seed=1)


def _control(tmp_path: Path, tiny_bundle) -> subprocess.Popen:
    """Plain onnxruntime, no switches: the telemetry the checks must catch."""
    home = tmp_path / "control-home"
    home.mkdir()
    code = ("import time, onnxruntime as ort\n"
            f"ort.InferenceSession({str(Path(tiny_bundle) / 'rfm.onnx')!r}, "
            "providers=['CPUExecutionProvider'])\n"
            f"time.sleep({IDLE_SECONDS})\n")
    return subprocess.Popen(_traced([sys.executable, "-c", code], tmp_path / "control.trace"),
                            env=_environment(home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _check_control(control: subprocess.Popen, tmp_path: Path) -> None:
    assert control.wait(60) == 0
    assert any(".onnxruntime" in p for p in _written_under(tmp_path / "control-home")), \
        "control: onnxruntime wrote no device id (the HOME check would miss telemetry)"
    if STRACE:
        assert _internet_calls(tmp_path / "control.trace"), \
            "control: no DNS look-up seen (the strace check would miss telemetry)"


def test_an_ask_in_process_uses_no_network_and_writes_nothing_home(tiny_bundle, scene, tmp_path):
    """The engine as Processing runs it inside QGIS's Python: no CLI entry point sets anything."""
    home = tmp_path / "home"
    home.mkdir()
    command = [sys.executable, "-c",
               "from rs_vqa_plugin.engine.pipeline import AskOptions, Engine\n"
               f"engine = Engine({str(tiny_bundle)!r}, device='cpu')\n"
               f"print(engine.ask({str(scene)!r}, 'What is here?', AskOptions(max_new_tokens=2)).mode)\n"]
    trace = tmp_path / "ask.trace"
    done = subprocess.run(_traced(command, trace), env=_environment(home), cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _written_under(home) == []
    assert _internet_calls(trace) == []


def test_the_worker_uses_no_network_while_it_answers_and_idles(tiny_bundle, scene, tmp_path):
    control = _control(tmp_path, tiny_bundle)
    home = tmp_path / "home"
    home.mkdir()
    trace = tmp_path / "worker.trace"
    worker = subprocess.Popen(
        _traced([sys.executable, "-m", "rs_vqa_plugin", "worker", "--heartbeat", "0.5"], trace),
        env=_environment(home), cwd=str(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, bufsize=1)
    try:
        worker.stdin.write(json.dumps({"id": "a1", "cmd": "ask", "model": str(tiny_bundle),
                                       "device": "cpu", "raster": str(scene),
                                       "question": "What is here?",
                                       "options": {"max_new_tokens": 2}}) + "\n")
        worker.stdin.flush()
        final = None
        for line in worker.stdout:
            event = json.loads(line)
            if event["id"] == "a1" and event["event"] in ("answer", "error"):
                final = event
                break
        assert final is not None and final["event"] == "answer", final
        idle_until = time.monotonic() + IDLE_SECONDS
        for line in worker.stdout:   # heartbeats while it waits for the next question
            if time.monotonic() > idle_until:
                break
        worker.stdin.write(json.dumps({"id": "bye", "cmd": "shutdown"}) + "\n")
        worker.stdin.flush()
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert _written_under(home) == []
    assert _internet_calls(trace) == []
    _check_control(control, tmp_path)


def _ray_control(tmp_path: Path) -> subprocess.Popen:
    """Plain Ray with usage stats off, as its documentation says: what the checks must catch."""
    home = tmp_path / "ray-control-home"
    home.mkdir()
    env = dict(_environment(home), RAY_USAGE_STATS_ENABLED="0")
    code = ("import time, ray\n"
            "ray.init(num_cpus=1, include_dashboard=False)\n"
            "time.sleep(3)\n"
            "ray.shutdown()\n")
    return subprocess.Popen(_traced([sys.executable, "-c", code], tmp_path / "ray-control.trace"),
                            env=env, cwd=str(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def test_a_local_ray_run_talks_only_to_this_machine_and_writes_nothing_home(tiny_bundle, scene,
                                                                           tmp_path):
    control = _ray_control(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "q.txt").write_text("What is here?\n")
    trace = tmp_path / "ray.trace"
    command = [sys.executable, "-m", "rs_vqa_plugin", "batch", "q.txt", str(scene), "--out",
               "out.jsonl", "--model", str(tiny_bundle), "--device", "cpu", "--max-new-tokens", "2",
               "--ray", "local", "--actors", "1", "--threads-per-actor", "1"]
    done = subprocess.run(_traced(command, trace), env=_environment(home), cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1
    assert _written_under(home) == []
    if STRACE:
        assert _internet_calls(trace), "no loopback traffic seen: the trace missed Ray"
    assert _off_machine_calls(trace) == []

    assert control.wait(120) == 0
    assert ".ray/auth_token" in _written_under(tmp_path / "ray-control-home"), \
        "control: Ray wrote no token under HOME (the HOME check would miss it)"
    if STRACE:
        assert _off_machine_calls(tmp_path / "ray-control.trace"), \
            "control: Ray made no off-machine call (the strace check would miss its probes)"
