"""Text-only baselines of the synthetic benchmark: per category, how much the question's wording
alone gives away (no image, no model; scenes are laid out, never rendered, so it takes seconds).

    python bench/bench_blind_text.py [--train train] [--split val] [--scenes 0]

Learns the text-only predictors (rs_vqa_plugin/benchmark/baselines.py) on the --train split and
prints, per category of --split: uniform chance, majority rate, template and word accuracies.
Never use the test split for a choice; it is accepted only to report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default="train", help="split the predictors learn from")
    parser.add_argument("--split", default="val", help="split they are measured on")
    parser.add_argument("--scenes", type=int, default=0, help="first N scenes of --split (0: all)")
    args = parser.parse_args(argv)
    if args.train == args.split:
        parser.error("--train and --split must differ (a predictor measured on its own data says nothing)")

    from rs_vqa_plugin.benchmark.baselines import blind_table, text_baselines
    from rs_vqa_plugin.benchmark.generate import split_questions

    train = split_questions(args.train)
    questions = split_questions(args.split, args.scenes or None)
    columns = text_baselines(train, questions)
    print(f"text-only baselines: learnt on {args.train} ({len(train)} questions), "
          f"measured on {args.split} ({len(questions)} questions); accuracy %")
    print(blind_table(questions, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
