"""`batch QUESTIONS RASTERS... --out ANSWERS`: every question about every raster, here or on Ray;
resumable, with a heatmap file per raster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = ("ask every question of a file about every raster (files, folders, globs): an answers "
        "table (.jsonl/.csv/.gpkg), heatmaps per raster, resumable, here or on a Ray cluster")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .ask import add_run_arguments
    from .pool_options import add_pool_arguments

    parser.add_argument("questions", help="questions: a .txt file (one per line), a .csv (a "
                                          "'question' or 'text' column, else the first) or an "
                                          "LRS-VQA .jsonl ('text', 'question_id')")
    parser.add_argument("rasters", nargs="+",
                        help="raster files, folders (their .tif/.vrt/... files) or quoted glob "
                             "patterns ('scenes/**/*.tif')")
    parser.add_argument("--out", required=True,
                        help="answers table, .jsonl, .csv or .gpkg: one row per raster and "
                             "question; an existing one is resumed (its answers are skipped)")
    parser.add_argument("--heatmaps", default=None,
                        help="folder for one GeoPackage per raster with the cells the model "
                             "looked at, per question (created if missing)")
    add_run_arguments(parser, max_new_tokens=32)
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_pool_arguments(parser)


def read_batch_questions(path: Path) -> list:
    """(question_id, text) pairs; questions without an id are q1, q2, ... by their place."""
    from ..engine.errors import InputError
    from ..engine.question_files import read_question_file

    questions = [(q.question_id or f"q{number}", q.text)
                 for number, q in enumerate(read_question_file(path), start=1)]
    if not questions:
        raise InputError(f"{path} holds no questions.")
    seen = set()
    for question_id, _text in questions:
        if question_id in seen:
            raise InputError(f"{path}: the question id {question_id} appears twice; answers are "
                             "resumed by raster and question id, so each id must be unique.")
        seen.add(question_id)
    return questions


def run(args) -> int:
    from ..engine.answer_worker import WorkUnit, group_units
    from ..engine.batch_heatmaps import HeatmapFolder
    from ..engine.batch_outputs import answer_row, open_answers
    from ..engine.batch_run import FailureLog, RunProgress, drive, failures_path
    from ..engine.output_paths import raster_files
    from ..engine.pipeline import AskOptions
    from ..engine.raster_list import list_rasters
    from ..engine.tile_cache import check_megabytes
    from .ask import resolve_model
    from .pool_options import answer_pool, ray_settings

    # Everything checked before a model loads or an output is made.
    ray_settings(args)
    check_megabytes(args.tile_cache_mb, "--tile-cache-mb")
    questions_path = Path(args.questions)
    questions = read_batch_questions(questions_path)
    rasters = list_rasters(args.rasters)
    model = resolve_model(args.model)
    inputs = [("the question file", questions_path)]
    inputs += [("one of the rasters", f) for raster in rasters for f in raster_files(raster)]
    answers = open_answers(args.out, inputs)
    heatmaps = HeatmapFolder(args.heatmaps, rasters) if args.heatmaps else None

    units = [WorkUnit(key=(str(raster), qid), raster=str(raster), question=text, group=str(raster),
                      meta={"question_id": qid})
             for raster in rasters for qid, text in questions if (str(raster), qid) not in answers.done]
    total = len(rasters) * len(questions)
    say = (lambda message: None) if args.quiet else (
        lambda message: print(message, file=sys.stderr, flush=True))
    if heatmaps is not None:
        answered = {}
        for raster, qid in answers.done:
            answered.setdefault(raster, set()).add(qid)
        removed = heatmaps.forget_unanswered(answered)
        if removed:
            say(f"removed {removed} heat cells of questions the answers table lacks (an "
                "interrupted run); they are written again with their answers")
    if not units:
        say(f"all {total} questions are answered in {args.out} already")
        answers.close()
        return 0
    say(f"{len(units)} of {total} questions to answer ({len(rasters)} rasters x "
        f"{len(questions)} questions)")
    options = AskOptions(mode=args.mode, alpha=args.alpha, n_max=args.n_max, level=args.level,
                         max_new_tokens=args.max_new_tokens, overview_cache_dir=args.cache_dir,
                         selection=args.selection)
    failures = FailureLog(failures_path(args.out))

    def write(outcome) -> None:
        unit = outcome.unit
        if heatmaps is not None:   # cells first: see batch_heatmaps.py
            heatmaps.add(unit.raster, unit.meta["question_id"], outcome.answer)
        answers.add(answer_row(unit.raster, unit.meta["question_id"], unit.question, outcome.answer))

    def report(line: str, outcome) -> None:
        name = Path(outcome.unit.raster).name
        qid = outcome.unit.meta["question_id"]
        if outcome.failed:
            say(f"{line} {name} {qid} FAILED: {outcome.error}")
        else:
            say(f"{line} {name} {qid}: {outcome.answer.text!r}")

    try:
        with answer_pool(args, model, options, keep_heat_cells=heatmaps is not None,
                         quiet=args.quiet) as pool:
            counts = drive(pool, group_units(units), write, failures,
                           lambda unit: unit.meta["question_id"],
                           RunProgress(total, total - len(units)), report, kept_in=args.out)
    finally:
        answers.close()
    say(f"{counts.answered} new answers in {args.out} ({counts.seconds:.1f} s)")
    if counts.failed:
        print(f"{counts.failed} questions failed on {len(failures.rasters)} rasters: see "
              f"{failures.path} (a rerun asks them again)", file=sys.stderr)
    return 1 if counts.failed else 0
