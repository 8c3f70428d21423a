"""Benchmark: what the tile cache saves when several questions are asked about one raster.

The shipped model (models/default) on scenes the benchmark package renders (a split's first
scenes, their LRS-VQA questions). Two measurements, each with the cache off (0 MB) and on (the
default), on one warm engine in one thread:
  second question: for consecutive question pairs of one scene, the seconds of the second (a
    different question) after the first was answered, per mode;
  eval: N questions over the scenes, answered as `eval` does (engine.evaluate.run_questions, which
    groups them by image), total seconds and seconds per question.
The answers with and without the cache are compared (they must be the same).

    nice -n 10 python bench/bench_tile_cache.py [--split val] [--scenes 2] [--pairs 6]
        [--eval-questions 24] [--modes dip,grid] [--level 3]
Prints markdown tables and writes bench/out/tile_cache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
MAX_NEW_TOKENS = 8


def one_thread_engine(model: str):
    """An Engine whose ONNX Runtime sessions use one thread (its default is every core; the
    machine's other core belongs to other work), torch likewise."""
    import torch

    from rs_vqa_plugin.engine import rfm, vision
    from rs_vqa_plugin.engine.onnx_session import make_session
    from rs_vqa_plugin.engine.pipeline import Engine

    torch.set_num_threads(1)

    def single(path, device="auto", threads=0):
        return make_session(path, device, 1)

    vision.make_session = rfm.make_session = single
    return Engine(model, device="cpu")


def options(mode: str, level: int):
    from rs_vqa_plugin.engine.pipeline import AskOptions

    return AskOptions(mode=mode, level=level, max_new_tokens=MAX_NEW_TOKENS)


def second_question(engine, images_dir: Path, pairs, mode: str, level: int, mb: float) -> dict:
    """Per pair: a cache of `mb` emptied, the first question answered, the second timed."""
    runs = []
    for first, second in pairs:
        engine.set_tile_cache_mb(0)
        engine.set_tile_cache_mb(mb)
        engine.ask(images_dir / first["image"], first["text"], options(mode, level))
        t = time.perf_counter()
        answer = engine.ask(images_dir / second["image"], second["text"], options(mode, level))
        runs.append({"seconds": time.perf_counter() - t, "text": answer.text,
                     "tiles_encoded": answer.trace["tiles_encoded"],
                     "tiles_from_cache": answer.trace["tiles_from_cache"],
                     "encode_s": answer.trace["seconds"]["encode"],
                     "read_s": answer.trace["seconds"]["read"]})
    mean = lambda key: statistics.mean(r[key] for r in runs)  # noqa: E731
    return {"mb": mb, "seconds_median": statistics.median(r["seconds"] for r in runs),
            "seconds_mean": mean("seconds"), "tiles_encoded": mean("tiles_encoded"),
            "tiles_from_cache": mean("tiles_from_cache"), "encode_s": mean("encode_s"),
            "read_s": mean("read_s"), "runs": runs}


def eval_run(engine, questions, images_dir: Path, mode: str, level: int, mb: float) -> dict:
    from rs_vqa_plugin.engine.evaluate import run_questions

    engine.set_tile_cache_mb(0)
    engine.set_tile_cache_mb(mb)
    with tempfile.TemporaryDirectory() as tmp:
        answers = Path(tmp) / "answers.jsonl"
        t = time.perf_counter()
        run_questions(engine, questions, images_dir, answers, options(mode, level))
        seconds = time.perf_counter() - t
        records = [json.loads(line) for line in answers.read_text().splitlines()]
    return {"mb": mb, "seconds": seconds, "seconds_per_question": seconds / len(records),
            "tiles_encoded": sum(r["tiles_encoded"] for r in records),
            "tiles_from_cache": sum(r["tiles_from_cache"] for r in records),
            "texts": {str(r["question_id"]): r["text"] for r in records}}


def main(argv=None) -> int:
    from bench_default import make_split_data   # the default-model benchmark's scenes + questions

    from rs_vqa_plugin.engine.tile_cache import DEFAULT_MB

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=6, help="question pairs of the first scene")
    parser.add_argument("--eval-questions", type=int, default=24)
    parser.add_argument("--modes", default="dip,grid")
    parser.add_argument("--level", type=int, default=3, help="the level of grid / prune-only")
    parser.add_argument("--data", default=str(ROOT / "bench" / "out" / "tile_cache_data"))
    args = parser.parse_args(argv)

    data = Path(args.data)
    questions = make_split_data(args.split, args.scenes, 1, data)
    by_image = {}
    for q in questions:
        by_image.setdefault(q["image"], []).append(q)
    first_scene = by_image[questions[0]["image"]]
    pairs = list(zip(first_scene[0::2], first_scene[1::2]))[:args.pairs]
    # Eval: questions taken round-robin over the scenes, so the file interleaves images.
    interleaved = [q for group in zip(*by_image.values()) for q in group][:args.eval_questions]

    engine = one_thread_engine(args.model)
    for image in by_image:    # overviews built and sessions warm before anything is timed
        engine.ask(data / image, "How many ships are there?", options("thumbnail", 1))

    report = {"benchmark": "tile_cache", "model": args.model, "split": args.split,
              "scenes": list(by_image), "max_new_tokens": MAX_NEW_TOKENS, "second_question": {},
              "eval": {}}
    for mode in args.modes.split(","):
        off = second_question(engine, data, pairs, mode, args.level, 0)
        on = second_question(engine, data, pairs, mode, args.level, DEFAULT_MB)
        same = sum(a["text"] == b["text"] for a, b in zip(off["runs"], on["runs"]))
        report["second_question"][mode] = {"off": off, "on": on, "same_answers": same,
                                           "pairs": len(pairs)}
        print(f"second question, {mode}: off {off['seconds_median']:.3f} s, on "
              f"{on['seconds_median']:.3f} s", file=sys.stderr)
    for mode in args.modes.split(","):
        off = eval_run(engine, interleaved, data, mode, args.level, 0)
        on = eval_run(engine, interleaved, data, mode, args.level, DEFAULT_MB)
        same = sum(off["texts"][k] == on["texts"][k] for k in off["texts"])
        report["eval"][mode] = {"off": off, "on": on, "same_answers": same,
                                "questions": len(interleaved)}
        print(f"eval, {mode}: off {off['seconds']:.2f} s, on {on['seconds']:.2f} s", file=sys.stderr)

    out = ROOT / "bench" / "out" / "tile_cache.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(markdown(report, args.level))
    print(f"\nwritten {out}", file=sys.stderr)
    return 0


def markdown(report: dict, level: int) -> str:
    def mode_name(mode):
        return f"{mode} (level {level})" if mode in ("grid", "prune-only") else mode

    lines = ["| second question | s off | s on | on / off | tiles encoded off | tiles encoded on "
             "| from cache on | same answers |", "|---|---|---|---|---|---|---|---|"]
    for mode, r in report["second_question"].items():
        off, on = r["off"], r["on"]
        lines.append(f"| {mode_name(mode)} | {off['seconds_median']:.3f} | {on['seconds_median']:.3f} "
                     f"| {on['seconds_median'] / off['seconds_median']:.2f} | "
                     f"{off['tiles_encoded']:.1f} | {on['tiles_encoded']:.1f} | "
                     f"{on['tiles_from_cache']:.1f} | {r['same_answers']}/{r['pairs']} |")
    lines += ["", "| eval, grouped by image | questions | s/question off | s/question on | on / off "
              "| tiles encoded off | tiles encoded on | from cache on | same answers |",
              "|---|---|---|---|---|---|---|---|---|"]
    for mode, r in report["eval"].items():
        off, on = r["off"], r["on"]
        lines.append(f"| {mode_name(mode)} | {r['questions']} | {off['seconds_per_question']:.3f} | "
                     f"{on['seconds_per_question']:.3f} | {on['seconds'] / off['seconds']:.2f} | "
                     f"{off['tiles_encoded']} | {on['tiles_encoded']} | {on['tiles_from_cache']} | "
                     f"{r['same_answers']}/{r['questions']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
