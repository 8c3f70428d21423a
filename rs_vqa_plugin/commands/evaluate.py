"""`eval QUESTIONS.jsonl --images DIR`: answer an LRS-VQA question file (resumable, sharded) and score it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "run an LRS-VQA question file and score it (accuracy per category, OA, AA per subset)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .ask import MODES, add_tile_cache_argument

    parser.add_argument("questions", help="questions in the LRS-VQA jsonl format")
    parser.add_argument("--images", help="folder holding the questions' images")
    parser.add_argument("--model", help="model bundle folder (default: models/default)")
    parser.add_argument("--mode", choices=MODES, default="dip")
    parser.add_argument("--level", type=int, default=1, help="the fixed level of grid / prune-only")
    parser.add_argument("--alpha", type=float, default=None)
    parser.add_argument("--n-max", type=int, default=None)
    parser.add_argument("--selection", default=None,
                        help="how dip zooms: paper or mass[:key=value,...] (default: the bundle's)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="the LLM's dtype (auto: the bundle's where the device runs it well, "
                             "float32 on CPUs without native bfloat16)")
    parser.add_argument("--cache-dir", default=None, help="folder for overviews of read-only rasters")
    add_tile_cache_argument(parser)
    parser.add_argument("--answers", default=None,
                        help="answers jsonl (default: beside the questions, named by mode and shard); "
                             "existing answers are kept and skipped; a file that is not an answers "
                             "file is refused")
    parser.add_argument("--shard", default=None, help="K/N: answer every N-th question from the K-th")
    parser.add_argument("--merge", nargs="+", metavar="ANSWERS", default=None,
                        help="combine these shard answer files into --answers and score, no model run")
    parser.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def default_answers_path(questions: Path, mode: str, shard) -> Path:
    tag = f".shard{shard[0]}of{shard[1]}" if shard else ""
    return questions.with_name(f"{questions.stem}.{mode}{tag}.answers.jsonl")


def run(args) -> int:
    from ..engine.errors import InputError
    from ..engine.evaluate import (check_answers_path, load_questions, merge_answer_files,
                                   parse_shard, read_answers, select_shard)
    from ..engine.scoring import format_scores, score_records

    questions_path = Path(args.questions)
    shard = parse_shard(args.shard)
    answers_path = Path(args.answers) if args.answers else default_answers_path(
        questions_path, args.mode, None if args.merge else shard)

    if args.merge:
        questions = load_questions(questions_path)
        check_answers_path(answers_path, questions_path)
        count, conflicts = merge_answer_files(args.merge, answers_path)
        print(f"merged {count} answers from {len(args.merge)} files into {answers_path}",
              file=sys.stderr)
        if conflicts:
            print(f"{len(conflicts)} ids answered differently in several files (first kept), "
                  f"e.g. {conflicts[0]}", file=sys.stderr)
        scope = questions
    else:
        if not args.images:
            raise InputError("--images is required: the folder holding the questions' images.")
        from ..engine.tile_cache import check_megabytes

        check_megabytes(args.tile_cache_mb, "--tile-cache-mb")
        if not Path(args.images).is_dir():
            raise InputError(f"--images {args.images} is not a folder.")
        questions = load_questions(questions_path, args.images)
        scope = select_shard(questions, shard)
        check_answers_path(answers_path, questions_path, args.images, questions)
        _answer(args, scope, answers_path)

    scores = score_records(scope, read_answers(answers_path).values())
    scores["answers"] = str(answers_path)
    if args.json:
        print(json.dumps(scores))
    else:
        print(format_scores(scores))
    return 0


def _answer(args, questions, answers_path: Path) -> None:
    from ..engine.evaluate import run_questions
    from ..engine.pipeline import AskOptions, Engine
    from .ask import resolve_model

    model = resolve_model(args.model)
    if not args.quiet:
        print(f"loading the model from {model}", file=sys.stderr)
    engine = Engine(model, device=args.device, tile_cache_mb=args.tile_cache_mb, dtype=args.dtype)
    options = AskOptions(mode=args.mode, alpha=args.alpha, n_max=args.n_max, level=args.level,
                         max_new_tokens=args.max_new_tokens, overview_cache_dir=args.cache_dir,
                         selection=args.selection)

    def on_answer(done: int, total: int, record: dict) -> None:
        if not args.quiet:
            print(f"[{done}/{total}] {record['question_id']}: {record['text']!r} "
                  f"(truth {record.get('ground_truth')!r}, {record['llm_vision_tokens']} image "
                  f"tokens, {record['tiles_encoded']} tiles encoded, {record['tiles_from_cache']} "
                  f"from the cache, {record['seconds']:.1f} s)", file=sys.stderr)

    count = run_questions(engine, questions, args.images, answers_path, options, on_answer=on_answer)
    if not args.quiet:
        print(f"{count} new answers in {answers_path}", file=sys.stderr)
