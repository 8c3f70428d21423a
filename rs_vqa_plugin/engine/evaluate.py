"""Run an LRS-VQA question file through the engine: sharded, resumable answer logs, merging.

An answers file is JSON lines, one record per answered question, appended and flushed one line at
a time; a re-run skips the ids already there (a half-written last line from a crash is dropped).
Questions are answered grouped by image (images in the order they first appear, questions of one
image in file order), so that consecutive questions reuse the engine's tile encodings; the records
are written in that answering order, and are matched to the questions by id.
A file that is not an answers file (or is the questions file, or an image) is never written to,
and a question's image must lie inside the images folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import InputError
from .progress import CancelToken, EventSink
from .scoring import read_jsonl_numbered

# Trace keys copied into every answer record (the full trace stays available from `ask --json`).
TRACE_KEYS = ("levels", "tiles_encoded", "tiles_from_cache", "llm_vision_tokens", "llm_tokens",
              "stop_reason", "selection")
# Keys of answer records (ours, or LRS-VQA's model_vqa output) that question records never have.
ANSWER_ONLY_KEYS = frozenset({"mode", "question", "prompt", "answer_id", "model_id"})


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


def check_questions(numbered: Sequence[Tuple[int, dict]], path) -> None:
    """numbered: (line, record) pairs as read from the file."""
    seen = set()
    for line, q in numbered:
        for key in ("question_id", "image", "text"):
            if key not in q:
                raise InputError(f"{path}, line {line}: the question has no '{key}' (LRS-VQA format: "
                                 "question_id, image, text, category, ground_truth).")
        if not isinstance(q["question_id"], (str, int)) or isinstance(q["question_id"], bool):
            raise InputError(f"{path}, line {line}: 'question_id' must be a string or a number, "
                             f"not {q['question_id']!r:.60}.")
        for key in ("image", "text"):
            if not isinstance(q[key], str) or not q[key].strip():
                raise InputError(f"{path}, line {line} ({q['question_id']}): '{key}' must be a "
                                 f"non-empty string, not {q[key]!r:.60}.")
        if q["question_id"] in seen:
            raise InputError(f"{path}, line {line}: question_id {q['question_id']} appears twice.")
        seen.add(q["question_id"])


def question_image(images_dir, image) -> Path:
    """The file of a question's image: a relative path that stays inside images_dir once `..` and
    symlinks are resolved (a question file must not make the run read, or write overviews beside,
    files elsewhere). InputError otherwise."""
    if not isinstance(image, str) or not image.strip():
        raise InputError(f"the image {image!r} is not a file name")
    images_dir = Path(images_dir)
    if Path(image).is_absolute():
        raise InputError(f"the image '{image}' is an absolute path; give it relative to the images "
                         f"folder {images_dir}")
    root = images_dir.resolve()
    resolved = (root / image).resolve()
    if root not in resolved.parents:
        raise InputError(f"the image '{image}' leads outside the images folder {images_dir} (to "
                         f"{resolved}); put the image inside that folder")
    return images_dir / image


def check_images_inside(numbered: Sequence[Tuple[int, dict]], path, images_dir) -> None:
    for line, q in numbered:
        try:
            question_image(images_dir, q["image"])
        except InputError as exc:
            raise InputError(f"{path}, line {line} (question {q['question_id']}): {exc}. Nothing "
                             "was asked.") from None


def _torn_line(line: str) -> bool:
    """What a crash mid-write leaves: the start of one JSON object, cut short."""
    return line.lstrip().startswith("{")


def read_answers(path) -> Dict[str, dict]:
    """Answered records by id; an unreadable last line (an interrupted write) is ignored.

    InputError for a file that is not an answers file (one JSON object with question_id and text
    per line), so a wrong --answers is never appended to, truncated or scored."""
    from .textfile import read_utf8_text

    path = Path(path)
    if not path.exists():
        return {}
    not_answers = (f"choose a new file name for the answers (or the answers file of an earlier run "
                   f"to resume it); {path} is left as it is.")
    try:
        text = read_utf8_text(path, "answers file")
    except InputError as exc:
        raise InputError(f"{exc} It cannot be an answers file: {not_answers}") from None
    answers: Dict[str, dict] = {}
    lines = text.split("\n")
    last = max((n for n, line in enumerate(lines, start=1) if line.strip()), default=0)
    question_like = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == last and _torn_line(line):
                continue
            if answers:
                raise InputError(f"{path}, line {number}: not valid JSON; fix or remove that line "
                                 "(the run can then resume).") from None
            raise InputError(f"{path} is not an answers file (line {number} is not JSON): "
                             f"{not_answers}") from None
        if not isinstance(record, dict) or "question_id" not in record or "text" not in record:
            raise InputError(f"{path}, line {number}: not an answer record (one JSON object with "
                             f"question_id and text per line): {not_answers}")
        # A question file has a ground truth on every line and nothing an answer record carries.
        question_like += int("ground_truth" in record and not ANSWER_ONLY_KEYS & record.keys())
        answers[str(record["question_id"])] = record
    if answers and question_like == len(answers):
        raise InputError(f"{path} looks like a question file (every line has a ground_truth and "
                         f"none has {', '.join(sorted(ANSWER_ONLY_KEYS))}), not answers: "
                         f"{not_answers}")
    return answers


def check_answers_path(answers_path, questions_path, images_dir=None,
                       questions: Sequence[dict] = ()) -> Dict[str, dict]:
    """Refuse an answers path that is a folder, the questions file or one of their images; return
    the answers already there (an existing file must be an answers file)."""
    from .output_paths import check_output_file, refuse_inputs

    answers_path = Path(answers_path)
    inputs = [("the questions file", questions_path)]
    if images_dir is not None:
        images = {q["image"] for q in questions if isinstance(q.get("image"), str)}
        inputs += [("an image of the questions", Path(images_dir) / name)
                   for name in sorted(images)]
    refuse_inputs(answers_path, inputs, "The answers file")
    if answers_path.is_dir() or answers_path.absolute().parent.is_dir():  # a missing one is made
        check_output_file(answers_path, "The answers file")
    return read_answers(answers_path)


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


def grouped_by_image(questions: Sequence[dict]) -> List[dict]:
    """The questions with those of one image together (a stable reorder): the tile cache holds a
    few images' encodings, so an image's questions are asked one after the other."""
    first: Dict[str, int] = {}
    for q in questions:
        first.setdefault(q["image"], len(first))
    return sorted(questions, key=lambda q: first[q["image"]])


def _pending(questions: Sequence[dict], images_dir: Path, done: Dict[str, dict]) -> List[dict]:
    """The questions not answered yet, grouped by image; InputError when images are missing."""
    todo = grouped_by_image([q for q in questions if str(q["question_id"]) not in done])
    missing = sorted({q["image"] for q in todo
                      if not question_image(images_dir, q["image"]).is_file()})
    if missing:
        raise InputError(f"{len(missing)} image(s) are not in {images_dir}, e.g. {missing[0]}: "
                         "check --images.")
    return todo


def open_answers_log(answers_path, done: Dict[str, dict]):
    """The answers file opened for appending (its torn last line dropped first)."""
    answers_path = Path(answers_path)
    _rewrite_complete(answers_path, done)
    answers_path.parent.mkdir(parents=True, exist_ok=True)
    return answers_path.open("a", encoding="utf-8")


def pending_units(questions: Sequence[dict], images_dir, done: Dict[str, dict]) -> list:
    """WorkUnits (answer_worker.py) of the questions not answered yet, grouped by image."""
    from .answer_worker import WorkUnit

    images_dir = Path(images_dir)
    return [WorkUnit(key=str(q["question_id"]), raster=str(question_image(images_dir, q["image"])),
                     question=q["text"], group=q["image"], meta={"question": q})
            for q in _pending(questions, images_dir, done)]


def run_questions(engine, questions: Sequence[dict], images_dir, answers_path, options,
                  on_answer: Optional[Callable[[int, int, dict], None]] = None,
                  events: Optional[EventSink] = None, cancel: Optional[CancelToken] = None) -> int:
    """Answer the questions not yet in answers_path, appending one line each; returns how many."""
    images_dir = Path(images_dir)
    done = read_answers(answers_path)
    todo = _pending(questions, images_dir, done)
    count = 0
    with open_answers_log(answers_path, done) as log:
        for index, question in enumerate(todo):
            if cancel is not None:
                cancel.raise_if_cancelled()
            answer = engine.ask(question_image(images_dir, question["image"]), question["text"],
                                options, events=events, cancel=cancel)
            record = answer_record(question, answer)
            log.write(json.dumps(record) + "\n")
            log.flush()
            count += 1
            if on_answer is not None:
                on_answer(index + 1, len(todo), record)
    return count


def merge_answer_files(paths: Iterable, out_path) -> Tuple[int, List[str]]:
    """Combine shard answer files into out_path (first answer of an id wins); (count, conflicts).

    Answers already in out_path come first and are kept, as a resumed run keeps them."""
    out_path = Path(out_path)
    merged: Dict[str, dict] = dict(read_answers(out_path))
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
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in merged.values()), encoding="utf-8")
    tmp.replace(out_path)
    return len(merged), conflicts


def load_questions(path, images_dir=None) -> List[dict]:
    """The question records of an LRS-VQA jsonl file, checked; with images_dir, every image must
    lie inside it (InputError naming the line and the question id)."""
    numbered = read_jsonl_numbered(path, "question file")
    if not numbered:
        raise InputError(f"{path} holds no questions.")
    check_questions(numbered, path)
    if images_dir is not None:
        check_images_inside(numbered, path, images_dir)
    return [record for _line, record in numbered]
