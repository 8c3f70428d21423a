"""Text-only baselines of the synthetic benchmark: per category, how much the question's wording
alone gives away (no image, no model; scenes are laid out, never rendered, so it takes seconds).

    python bench/bench_blind_text.py [--train train] [--split val] [--scenes 0] [--folds 0]

Learns the text-only predictors (rs_vqa_plugin/benchmark/baselines.py) on the --train split and
prints, per category of --split: uniform chance, majority rate, template and word accuracies.
With --folds K it instead cross-validates on the --train split alone (K folds of whole scenes):
ten times the questions of val, so smaller leaks show. Never use the test split for a choice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cross_validated(questions, folds: int) -> dict:
    """{predictor: {category: accuracy}}, each scene's questions predicted by models learnt on
    the other folds' scenes."""
    from rs_vqa_plugin.benchmark.baselines import PREDICTORS, accuracy_by_category

    images = sorted({q["image"] for q in questions})
    predicted = {name: {} for name in PREDICTORS}
    for k in range(folds):
        held = set(images[k::folds])
        train = [q for q in questions if q["image"] not in held]
        for name, make in PREDICTORS.items():
            model = make(train)
            predicted[name].update({q["question_id"]: model.predict(q) for q in questions if q["image"] in held})
    return {name: accuracy_by_category(questions, p) for name, p in predicted.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default="train", help="split the predictors learn from")
    parser.add_argument("--split", default="val", help="split they are measured on")
    parser.add_argument("--scenes", type=int, default=0, help="first N scenes of --split (0: all)")
    parser.add_argument("--folds", type=int, default=0,
                        help="cross-validate on --train in K folds of scenes instead (0: off)")
    args = parser.parse_args(argv)

    from rs_vqa_plugin.benchmark.baselines import blind_table, text_baselines
    from rs_vqa_plugin.benchmark.generate import split_questions

    train = split_questions(args.train)
    if args.folds:
        if args.folds < 2:
            parser.error("--folds needs at least 2 folds")
        print(f"text-only baselines: {args.folds}-fold cross-validation over the scenes of {args.train} "
              f"({len(train)} questions); accuracy %")
        print(blind_table(train, cross_validated(train, args.folds)))
        return 0
    if args.train == args.split:
        parser.error("--train and --split must differ (a predictor measured on its own data says nothing)")
    questions = split_questions(args.split, args.scenes or None)
    columns = text_baselines(train, questions)
    print(f"text-only baselines: learnt on {args.train} ({len(train)} questions), "
          f"measured on {args.split} ({len(questions)} questions); accuracy %")
    print(blind_table(questions, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
