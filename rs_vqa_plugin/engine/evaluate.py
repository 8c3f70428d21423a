"""Run an LRS-VQA question file through the engine: sharded, resumable answer logs, merging.

An answers file is JSON lines, one record per answered question, appended and flushed one line at
a time; a re-run skips the ids already there (a half-written last line from a crash is dropped).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import InputError
from .progress import CancelToken, EventSink
from .scoring import read_jsonl

# Trace keys copied into every answer record (the full trace stays available from `ask --json`).
TRACE_KEYS = ("levels", "tiles_encoded", "llm_vision_tokens", "llm_tokens", "stop_reason",
              "selection")


def parse_shard(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """'K/N' (1 <= K <= N) -> (K, N)."""
    if not text:
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--shard '{text}' must look like K/N, e.g. 1/4.") from None
    if n < 1 or not 1 <= k <= n:
        raise InputError(f"--shard {text}: K must be between 1 and N (e.g. 1/4 ... 4/4).")
    return k, n


def select_shard(questions: Sequence[dict], shard: Optional[Tuple[int, int]]) -> List[dict]:
    """Every N-th question starting at K-1: shards interleave, so each gets a mix of image sizes."""
    if shard is None:
        return list(questions)
    k, n = shard
    return [q for i, q in enumerate(questions) if i % n == k - 1]


def check_questions(questions: Sequence[dict], path) -> None:
    seen = set()
    for number, q in enumerate(questions, start=1):
        for key in ("question_id", "image", "text"):
            if key not in q:
                raise InputError(f"{path}: question {number} has no '{key}' (LRS-VQA format: "
                                 "question_id, image, text, category, ground_truth).")
        if not isinstance(q["question_id"], (str, int)) or isinstance(q["question_id"], bool):
            raise InputError(f"{path}: question {number}: 'question_id' must be a string or a "
                             f"number, not {q['question_id']!r:.60}.")
        for key in ("image", "text"):
            if not isinstance(q[key], str) or not q[key].strip():
                raise InputError(f"{path}: question {number} ({q['question_id']}): '{key}' must be "
                                 f"a non-empty string, not {q[key]!r:.60}.")
        if q["question_id"] in seen:
            raise InputError(f"{path}: question_id {q['question_id']} appears twice.")
        seen.add(q["question_id"])


def read_answers(path) -> Dict[str, dict]:
    """Answered records by id; an unreadable last line (an interrupted write) is ignored."""
    path = Path(path)
    if not path.exists():
        return {}
    answers: Dict[str, dict] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                continue
            raise InputError(f"{path}, line {number}: not valid JSON; fix or remove that line "
                             "(the run can then resume).") from None
        answers[str(record["question_id"])] = record
    return answers


def _rewrite_complete(path: Path, answers: Dict[str, dict]) -> None:
    """Drop a torn last line before appending, so every line stays one JSON object."""
    if not path.exists():
        return
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in answers.values()), encoding="utf-8")
        tmp.replace(path)


def answer_record(question: dict, answer) -> dict:
    trace = answer.trace
    # "id" too: the reference's evaluation script groups answers by it (subset = prefix of id).
    record = {"question_id": question["question_id"], "id": question["question_id"],
              "image": question["image"],
              "question": question["text"], "text": answer.text, "mode": answer.mode,
              "category": question.get("category"), "ground_truth": question.get("ground_truth")}
    record.update({k: trace.get(k) for k in TRACE_KEYS})
    record["tflops"] = trace.get("flops", {}).get("total", 0) / 1e12
    record["seconds"] = trace.get("seconds", {}).get("total")
    return record


def run_questions(engine, questions: Sequence[dict], images_dir, answers_path, options,
                  on_answer: Optional[Callable[[int, int, dict], None]] = None,
                  events: Optional[EventSink] = None, cancel: Optional[CancelToken] = None) -> int:
    """Answer the questions not yet in answers_path, appending one line each; returns how many."""
    images_dir = Path(images_dir)
    answers_path = Path(answers_path)
    done = read_answers(answers_path)
    _rewrite_complete(answers_path, done)
    todo = [q for q in questions if str(q["question_id"]) not in done]
    missing = sorted({q["image"] for q in todo if not (images_dir / q["image"]).is_file()})
    if missing:
        raise InputError(f"{len(missing)} image(s) are not in {images_dir}, e.g. {missing[0]}: "
                         "check --images.")
    answers_path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with answers_path.open("a", encoding="utf-8") as log:
        for index, question in enumerate(todo):
            if cancel is not None:
                cancel.raise_if_cancelled()
            answer = engine.ask(images_dir / question["image"], question["text"], options,
                                events=events, cancel=cancel)
            record = answer_record(question, answer)
            log.write(json.dumps(record) + "\n")
            log.flush()
            count += 1
            if on_answer is not None:
                on_answer(index + 1, len(todo), record)
    return count


def merge_answer_files(paths: Iterable, out_path) -> Tuple[int, List[str]]:
    """Combine shard answer files into out_path (first answer of an id wins); (count, conflicts)."""
    merged: Dict[str, dict] = {}
    conflicts: List[str] = []
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"--merge: {path} does not exist.")
        for qid, record in read_answers(path).items():
            if qid in merged:
                if merged[qid].get("text") != record.get("text"):
                    conflicts.append(qid)
                continue
            merged[qid] = record
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in merged.values()), encoding="utf-8")
    tmp.replace(out_path)
    return len(merged), conflicts


def load_questions(path) -> List[dict]:
    questions = read_jsonl(path)
    if not questions:
        raise InputError(f"{path} holds no questions.")
    check_questions(questions, path)
    return questions
