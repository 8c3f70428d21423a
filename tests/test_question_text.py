"""A question that is not text, not UTF-8, or far longer than the model's context is refused with
a message before anything tokenises it (engine/question_text.py), in the CLI and the eval files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rs_vqa_plugin.commands import main
from rs_vqa_plugin.engine.errors import InputError
from rs_vqa_plugin.engine.question_text import check_question_text, max_question_chars
from tests.rasters import make_rgb_scene

pytest_plugins = ["tests.fixtures_models"]
REPO = Path(__file__).resolve().parent.parent


def _refusal(*args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        check_question_text(*args, **kwargs)
    return str(info.value)


def test_text_within_the_context_passes():
    check_question_text("How many ships?", [("Any water?", "yes")], context_tokens=4096)
    check_question_text("x" * max_question_chars(4096), context_tokens=4096)


def test_a_question_beyond_the_context_is_refused_by_its_length():
    message = _refusal("a " * 40_000, context_tokens=4096)
    assert "80,000 characters" in message and "4,096 tokens" in message
    message = _refusal("short?", [("q" * 70_000, "a")], context_tokens=4096)
    assert "earlier turns" in message and "new conversation" in message


def test_bytes_that_are_not_utf8_are_named():
    argv_question = os.fsdecode(b"what \xff is here?")   # what Python makes of such argv bytes
    message = _refusal(argv_question)
    assert "byte 0xff at character 6" in message and "UTF-8" in message
    assert "U+D800" in _refusal("what \ud800 here")
    assert "Earlier answer 1" in _refusal("ok?", [("fine", "bad \udce9")])


def test_not_text_is_refused():
    assert "must be text" in _refusal(42)
    assert "pair of texts" in _refusal("ok?", [("only one",)])


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_rgb_scene(tmp_path_factory.mktemp("qtext") / "scene.tif", size=(300, 200), seed=1)


@pytest.mark.subprocess
def test_cli_question_with_non_utf8_bytes_is_a_message(tiny_bundle, scene):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable.encode(), b"-m", b"rs_vqa_plugin", b"ask",
                           str(scene).encode(), "caf\xe9?".encode("latin-1"), b"--model",
                           str(tiny_bundle).encode(), b"--quiet"],
                          env=env, cwd=str(REPO), capture_output=True, timeout=300)
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2, err
    assert "byte 0xe9 at character 4" in err and "Traceback" not in err


def test_cli_refuses_an_overlong_conversation_before_loading_the_model(tiny_bundle, scene,
                                                                      tmp_path, capsys):
    history = tmp_path / "history.json"
    history.write_text(json.dumps([["a " * 300_000, "no"]]))
    code = main(["ask", str(scene), "And now?", "--model", str(tiny_bundle), "--history",
                 str(history)])
    err = capsys.readouterr().err
    assert code == 2 and "characters long" in err and "loading the model" not in err


@pytest.mark.parametrize("line, said", [
    ("5", "line 1: a number"), ("[1, 2]", "line 1: an array"), ('"What?"', "line 1: a string"),
    ("null", "line 1: null"),
])
def test_eval_question_lines_must_be_objects(tiny_bundle, tmp_path, capsys, line, said):
    questions = tmp_path / "q.jsonl"
    questions.write_text(line + "\n")
    code = main(["eval", str(questions), "--images", str(tmp_path), "--model", str(tiny_bundle),
                 "--answers", str(tmp_path / "a.jsonl")])
    assert code == 2 and said in capsys.readouterr().err


def test_eval_file_not_utf8_and_non_text_question(tiny_bundle, tmp_path, capsys):
    questions = tmp_path / "q.jsonl"
    good = {"question_id": "FAIR_1", "image": "a.tif", "text": "How many?"}
    questions.write_bytes((json.dumps(good) + "\n").encode() + b'{"text": "caf\xe9"}\n')
    args = ["eval", str(questions), "--images", str(tmp_path), "--model", str(tiny_bundle),
            "--answers", str(tmp_path / "a.jsonl")]
    assert main(args) == 2 and "line 2: not UTF-8 text (byte 0xe9)" in capsys.readouterr().err
    questions.write_text(json.dumps(dict(good, text=5)) + "\n")
    assert main(args) == 2 and "'text' must be a non-empty string" in capsys.readouterr().err


def test_engine_refuses_an_overlong_question_before_tokenising(tiny_bundle, tmp_path):
    import time

    from rs_vqa_plugin.engine.errors import InputError
    from rs_vqa_plugin.engine.pipeline import Engine
    from tests.rasters import make_rgb_scene

    engine = Engine(tiny_bundle, device="cpu")
    scene = make_rgb_scene(tmp_path / "s.tif", size=64)
    start = time.perf_counter()
    with pytest.raises(InputError, match="characters long"):
        engine.ask(scene, "How many ships? " * 700_000)     # about 11 MB
    assert time.perf_counter() - start < 2.0
