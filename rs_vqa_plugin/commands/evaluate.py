"""`eval QUESTIONS.jsonl --images DIR`: answer an LRS-VQA question file (resumable, sharded, here
or on a Ray cluster with --ray) and score it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "run an LRS-VQA question file and score it (accuracy per category, OA, AA per subset)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .ask import add_run_arguments
    from .pool_options import add_pool_arguments

    parser.add_argument("questions", help="questions in the LRS-VQA jsonl format")
    parser.add_argument("--images", help="folder holding the questions' images")
    add_run_arguments(parser, max_new_tokens=16)
    parser.add_argument("--answers", default=None,
                        help="answers jsonl (default: beside the questions, named by mode and shard); "
                             "existing answers are kept and skipped; a file that is not an answers "
                             "file is refused")
    parser.add_argument("--shard", default=None, help="K/N: answer every N-th question from the K-th")
    parser.add_argument("--merge", nargs="+", metavar="ANSWERS", default=None,
                        help="combine these shard answer files into --answers and score, no model run")
    parser.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_pool_arguments(parser)


def default_answers_path(questions: Path, mode: str, shard) -> Path:
    tag = f".shard{shard[0]}of{shard[1]}" if shard else ""
    return questions.with_name(f"{questions.stem}.{mode}{tag}.answers.jsonl")


def run(args) -> int:
    from ..engine.errors import InputError
    from ..engine.evaluate import (check_answers_path, load_questions, merge_answer_files,
                                   parse_shard, read_answers, select_shard)
    from ..engine.scoring import format_scores, score_records
    from .pool_options import ray_settings

    questions_path = Path(args.questions)
    ray_settings(args)   # its options checked before any work
    shard = parse_shard(args.shard)
    answers_path = Path(args.answers) if args.answers else default_answers_path(
        questions_path, args.mode, None if args.merge else shard)

    failed = 0
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
        failed = _answer(args, scope, answers_path)
    scores = score_records(scope, read_answers(answers_path).values())
    scores["answers"] = str(answers_path)
    if args.json:
        print(json.dumps(scores))
    else:
        print(format_scores(scores))
    return 1 if failed else 0


def _answer(args, questions, answers_path: Path) -> int:
    """Answer what answers_path lacks, here or on Ray; returns how many questions failed."""
    from ..engine.answer_worker import group_units
    from ..engine.batch_run import FailureLog, RunProgress, drive, failures_path
    from ..engine.evaluate import answer_record, open_answers_log, pending_units, read_answers
    from ..engine.pipeline import AskOptions
    from .ask import resolve_model
    from .pool_options import answer_pool

    done = read_answers(answers_path)
    units = pending_units(questions, args.images, done)
    if not units:
        if not args.quiet:
            print(f"every question is answered in {answers_path} already", file=sys.stderr)
        return 0
    model = resolve_model(args.model)
    options = AskOptions(mode=args.mode, alpha=args.alpha, n_max=args.n_max, level=args.level,
                         max_new_tokens=args.max_new_tokens, overview_cache_dir=args.cache_dir,
                         selection=args.selection)
    progress = RunProgress(total=len(questions), already=len(questions) - len(units))
    failures = FailureLog(failures_path(answers_path))

    def report(line: str, outcome) -> None:
        if args.quiet:
            return
        question = outcome.unit.meta["question"]
        if outcome.failed:
            print(f"{line} {question['question_id']} ({question['image']}) FAILED: {outcome.error}",
                  file=sys.stderr, flush=True)
            return
        trace = outcome.answer.trace
        print(f"{line} {question['question_id']}: {outcome.answer.text!r} "
              f"(truth {question.get('ground_truth')!r}, {trace.get('llm_vision_tokens')} image "
              f"tokens, {trace.get('tiles_encoded')} tiles encoded, {trace.get('tiles_from_cache')} "
              f"from the cache, {(trace.get('seconds') or {}).get('total', 0):.1f} s)",
              file=sys.stderr, flush=True)

    with answer_pool(args, model, options, keep_heat_cells=False, quiet=args.quiet) as pool, \
            open_answers_log(answers_path, done) as log:
        def write(outcome) -> None:
            log.write(json.dumps(answer_record(outcome.unit.meta["question"], outcome.answer)) + "\n")
            log.flush()

        counts = drive(pool, group_units(units), write, failures, lambda unit: unit.key,
                       progress, report, kept_in=str(answers_path))
    if not args.quiet:
        print(f"{counts.answered} new answers in {answers_path} ({counts.seconds:.1f} s)",
              file=sys.stderr)
    if counts.failed:
        print(f"{counts.failed} questions failed on {len(failures.rasters)} images: see "
              f"{failures.path} (a rerun asks them again)", file=sys.stderr)
    return counts.failed
