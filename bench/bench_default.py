"""Benchmark of the bundled default model on the synthetic `test` split (large scenes, 8k px and up).

Per mode (thumbnail, grid = 3x3 tiles of level 1 whose long side is 3B, prune-only at the deepest
level of at most PRUNE_ONLY_MAX_TILES tiles, dip, full where it fits the token limit): accuracy
per category, OA and AA (the engine's LRS-VQA scorer), LLM vision tokens, tiles encoded and
seconds per question, the share of answers of the asked kind (a colour to a colour question,
digits to a count; benchmark.answer_kinds); for dip and prune-only also localisation: the share
of questions with a box whose final kept tokens touch the box, and "object followed": the share
whose box stays in the tiles read at every level (where dip loses it otherwise). Answers are
logged per mode (a re-run resumes). Mode `blind` (a diagnostic) answers with no image and adds a
per-category table: uniform chance, majority rate, the blind model, and the text-only predictors
of rs_vqa_plugin/benchmark/baselines.py (learnt on the train split).

    python bench/bench_default.py [--model models/default] [--scenes 3] [--stride 2]
        [--modes thumbnail,grid,prune-only,dip,full] [--out bench/out/default] [--split test]
Prints a markdown table and writes OUT/results.json (+ OUT/accuracy_tokens.png).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("thumbnail", "grid", "prune-only", "dip", "full")
# Diagnostic, not a mode of the method: `full` on a crop around the asked object's box (the
# answer key's box, so an upper bound of what a perfect selection could hand the LLM). Boxed
# questions only; tells a reading failure (the model cannot answer even from the object at full
# resolution) from a selection failure.
ORACLE = "oracle-crop"
ORACLE_MARGIN = 128     # source pixels around the box
# Diagnostic: dip whose scorer puts all the mass on the asked box (boxed questions only): can the
# selection reach the object at full resolution at all? Modes take a selection after '@', e.g.
# dip@paper, dip@mass, oracle-dip@mass (default: the bundle's). Its answer records also carry
# `shadow`: per pass, the rank the real RFM gave the asked box among the tokens scored there, so
# where along the path the RFM loses the object can be read off (recall at k per level).
ORACLE_DIP = "oracle-dip"
# Diagnostic: the thumbnail mode with the all-mean image (AskOptions.blind): the model answers
# from the question alone. Its per-category table adds the chance levels and the text-only
# predictors (rs_vqa_plugin/benchmark/baselines.py, learnt on the train split).
BLIND = "blind"
PRUNE_ONLY_MAX_TILES = 256
MAX_NEW_TOKENS = 8


def make_split_data(split: str, scenes: int, stride: int, data_dir: Path):
    """The split's first `scenes` scenes (cached in data_dir) and their questions, generated with
    the split's own per-scene count in split order, so they are the split's official questions for
    those scenes; then every `stride`-th question of each scene (categories stay mixed)."""
    from rs_vqa_plugin.benchmark.generate import make_scene, write_questions
    from rs_vqa_plugin.benchmark.questions import QUESTIONS_VERSION
    from rs_vqa_plugin.benchmark.scene import sidecar_path
    from rs_vqa_plugin.benchmark.splits import get_split, scene_file_name

    data_dir.mkdir(parents=True, exist_ok=True)
    spec = get_split(split)
    images = []
    for seed, width, height in spec.scenes[:scenes]:
        path = data_dir / scene_file_name(seed)
        if not (path.is_file() and sidecar_path(path).is_file()):
            t = time.perf_counter()
            make_scene(path, seed, width, height)
            print(f"scene {path.name} ({width} px): {time.perf_counter() - t:.0f} s", file=sys.stderr)
        images.append(path)
    listing = data_dir / f"{split}.first{scenes}.q{QUESTIONS_VERSION}.jsonl"
    if not listing.is_file():
        write_questions([sidecar_path(p) for p in images], listing, spec.per_scene)
    questions = [json.loads(l) for l in listing.read_text().splitlines() if l.strip()]
    by_image = {}
    for q in questions:
        by_image.setdefault(q["image"], []).append(q)
    return [q for p in images for q in by_image.get(p.name, [])[::max(1, stride)]]


def prune_only_level(width: int, height: int, manifest) -> int:
    from rs_vqa_plugin.engine.pyramid import plan_pyramid

    plan = plan_pyramid(width, height, manifest.tile_size, manifest.pooled_grid,
                        **manifest.plan_options())
    fits = [lv.index for lv in plan.levels if lv.tile_count() <= PRUNE_ONLY_MAX_TILES]
    return max(fits) if fits else 1


def full_vision_tokens(width: int, height: int, manifest) -> int:
    """The image tokens `full` would hand the LLM (thumbnail + every finest-level token + row ends),
    as the engine counts them before it refuses an image over its limit."""
    from rs_vqa_plugin.engine.pyramid import level_valid_token_shape, plan_pyramid

    plan = plan_pyramid(width, height, manifest.tile_size, manifest.pooled_grid,
                        **manifest.plan_options())
    rows, cols = level_valid_token_shape(plan, len(plan.levels))
    return manifest.thumbnail_tokens + rows * cols + rows


def box_touched(answer, box, georef) -> bool:
    """True when any final kept token's cell overlaps the question's pixel box."""
    import numpy as np

    cells = [c for c in answer.heat_cells if c.kind == "token"]
    if not cells:
        return False
    x1, y1, x2, y2 = (float(v) for v in box)
    for cell in cells:
        xs, ys = zip(*cell.ring)
        px, py = georef.map_to_pixel(np.asarray(xs), np.asarray(ys))
        if px.min() < x2 and px.max() > x1 and py.min() < y2 and py.max() > y1:
            return True
    return False


def box_in_tiles(trace: dict, box, size, manifest) -> list:
    """Per pass of a dip/prune-only trace: does any tile read at that level touch the box?
    (Where dip loses the asked object on its way down, if it does.)"""
    from rs_vqa_plugin.engine.pyramid import plan_pyramid
    from rs_vqa_plugin.modeling.train_default.views import box_tiles

    plan = plan_pyramid(*size, manifest.tile_size, manifest.pooled_grid,
                        **manifest.plan_options())
    kept = []
    for level in trace["levels"]:
        r0, r1, c0, c1 = box_tiles(plan, level, box)
        tiles = {tuple(t) for t in trace["tiles"][str(level)]}
        kept.append(any((r, c) in tiles for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)))
    return kept


def oracle_scope(box, size, georef):
    """The box grown by ORACLE_MARGIN px on each side, clipped to the image, in map coordinates."""
    import numpy as np

    x1, y1, x2, y2 = (float(v) for v in box)
    x1, y1 = max(0.0, x1 - ORACLE_MARGIN), max(0.0, y1 - ORACLE_MARGIN)
    x2, y2 = min(float(size[0]), x2 + ORACLE_MARGIN), min(float(size[1]), y2 + ORACLE_MARGIN)
    xs, ys = georef.pixel_to_map(np.array([x1, x2, x1, x2]), np.array([y1, y1, y2, y2]))
    return (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))


def run_mode(engine, questions, images: Path, mode: str, log_path: Path, n_max=None,
             alpha=None) -> list:
    from rs_vqa_plugin.engine.errors import InputError
    from rs_vqa_plugin.engine.pipeline import AskOptions
    from rs_vqa_plugin.engine.raster import RasterSource
    from rs_vqa_plugin.engine.scoring import is_correct

    done = {}
    if log_path.is_file():
        for line in log_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["question_id"]] = r
    with log_path.open("a") as log:
        for q in questions:
            if q["question_id"] in done:
                continue
            path = images / q["image"]
            with RasterSource(path) as src:
                georef, size = src.georef, (src.width, src.height)
            level = prune_only_level(*size, engine.manifest) if mode == "prune-only" else 1
            base, _, selection = mode.partition("@")
            selection = selection.replace("+", ",")     # mass:a=1+b=2 (modes are comma-separated)
            options = AskOptions(mode=base, level=level, max_new_tokens=MAX_NEW_TOKENS, n_max=n_max,
                                 alpha=alpha, selection=selection or None)
            if base == ORACLE_DIP:
                if not q.get("hbox"):
                    continue
                options = AskOptions(mode="dip", max_new_tokens=MAX_NEW_TOKENS, n_max=n_max,
                                     alpha=alpha, selection=selection or None,
                                     oracle_box=tuple(float(v) for v in q["hbox"]))
            if mode == BLIND:
                options = AskOptions(mode="thumbnail", max_new_tokens=MAX_NEW_TOKENS, blind=True)
            if mode == ORACLE:
                if not q.get("hbox"):
                    continue
                options = AskOptions(mode="full", max_new_tokens=MAX_NEW_TOKENS,
                                     scope=oracle_scope(q["hbox"], size, georef))
            record = {"question_id": q["question_id"], "mode": mode, "category": q["category"],
                      "image": q["image"], "image_size": list(size), "boxed": bool(q.get("hbox")),
                      "full_vision_tokens": full_vision_tokens(*size, engine.manifest)}
            try:
                answer = engine.ask(path, q["text"], options)
            except InputError as exc:
                record.update(refused=str(exc).split(":")[0])
            else:
                t = answer.trace
                record.update(text=answer.text, correct=is_correct(q["ground_truth"], answer.text),
                              llm_vision_tokens=t["llm_vision_tokens"],
                              tiles_encoded=t["tiles_encoded"], levels=t["levels"],
                              stop_reason=t["stop_reason"], seconds=t["seconds"]["total"],
                              level=level if mode in ("grid", "prune-only") else None)
                record["rfm_peak"] = t.get("rfm_peak")
                if t.get("shadow"):
                    record["shadow"] = t["shadow"]      # the RFM's ranks along the oracle's path
                if q.get("hbox") and options.mode in ("dip", "prune-only"):
                    record["touches_box"] = box_touched(answer, q["hbox"], georef)
                    record["box_in_tiles"] = box_in_tiles(t, q["hbox"], size, engine.manifest)
            log.write(json.dumps(record) + "\n")
            log.flush()
            done[q["question_id"]] = record
    return [done[q["question_id"]] for q in questions if q["question_id"] in done]


# Categories that ask about one object (its box is that object's): where the "finest level"
# and "object followed" figures are counted. reasoning compares two objects, rural/urban a region.
SINGLE_OBJECT = ("object background", "object category", "object color", "object shape", "object status")


def r_mode(records) -> str:
    """The mode of a list of answer records without its '@selection'."""
    return records[0]["mode"].partition("@")[0] if records else ""


def summarise(questions, records) -> dict:
    from rs_vqa_plugin.benchmark.answer_kinds import is_of_kind
    from rs_vqa_plugin.engine.scoring import score_records

    answered = [r for r in records if "text" in r]
    result = {"questions": len(records), "answered": len(answered),
              "refused": len(records) - len(answered)}
    if not answered:
        return result
    ids = {r["question_id"] for r in answered}
    scores = score_records([q for q in questions if q["question_id"] in ids], answered)
    overall = scores.get("overall", scores)
    mean = lambda key: sum(r[key] for r in answered) / len(answered)
    boxed_ids = {q["question_id"] for q in questions if q.get("hbox")} & ids
    if boxed_ids:   # the perception figures compare modes on the single-object questions
        boxed_scores = score_records([q for q in questions if q["question_id"] in boxed_ids],
                                     [r for r in answered if r["question_id"] in boxed_ids])
        result["AA_boxed"] = boxed_scores.get("overall", boxed_scores)["AA"]
        result["boxed_answered"] = len(boxed_ids)
    full_tokens = [r.get("full_vision_tokens") for r in answered if r.get("full_vision_tokens")]
    if full_tokens:
        result["full_vision_tokens"] = sum(full_tokens) / len(full_tokens)
        result["tokens_vs_full"] = (sum(r["llm_vision_tokens"] / r["full_vision_tokens"] for r in answered
                                        if r.get("full_vision_tokens")) / len(full_tokens))
    result.update(AA=overall["AA"], OA=overall["OA"],
                  categories={k: v["accuracy"] for k, v in overall["categories"].items()},
                  llm_vision_tokens=mean("llm_vision_tokens"), tiles_encoded=mean("tiles_encoded"),
                  seconds=mean("seconds"))
    boxed = [r for r in answered if "touches_box" in r]
    if boxed:
        result["localisation"] = sum(r["touches_box"] for r in boxed) / len(boxed)
        result["boxed_questions"] = len(boxed)
        followed = [r for r in boxed if "box_in_tiles" in r]
        if followed:
            # share of boxed questions whose object stayed in the tiles read at every level
            result["box_followed"] = sum(all(r["box_in_tiles"]) for r in followed) / len(followed)
            result["final_level"] = sum(r["levels"][-1] for r in answered) / len(answered)
    # answers of the asked kind (a colour for a colour question, digits for a count), right or
    # wrong: a wrong-kind answer shows the model did not understand the question at all
    kinds = {}
    for r in answered:
        ok = is_of_kind(r["category"], r["text"])
        if ok is not None:
            kinds.setdefault(r["category"], []).append(ok)
    if kinds:
        every = [x for v in kinds.values() for x in v]
        result["asked_kind"] = sum(every) / len(every)
        result["asked_kind_by_category"] = {k: sum(v) / len(v) for k, v in sorted(kinds.items())}
    finest = [r for r in answered if r.get("stop_reason") == "finest-level"]
    if any(r.get("stop_reason") for r in answered):
        result["finest_reached"] = len(finest) / len(answered)
        single = [r for r in answered if r["category"] in SINGLE_OBJECT and r.get("levels")]
        if single and r_mode(answered) in ("dip", ORACLE_DIP, "prune-only"):
            result["finest_reached_single"] = sum(r["stop_reason"] == "finest-level" for r in single) / len(single)
            followed = [r for r in single if "box_in_tiles" in r]
            if followed:
                result["followed_single"] = sum(all(r["box_in_tiles"]) for r in followed) / len(followed)
            result["single_object_questions"] = len(single)
    return result


def table(summary: dict) -> str:
    cats = sorted({c for s in summary.values() for c in s.get("categories", {})})
    head = ["mode", "AA", "OA", "AA boxed"] + cats + ["asked kind", "vision tokens", "of full's",
                                                      "tiles", "s/question", "localisation",
                                                      "object followed", "final level",
                                                      "finest reached", "single-object: finest / followed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode, s in summary.items():
        if "AA" not in s:
            lines.append(f"| {mode} | refused ({s['refused']}/{s['questions']}) |" + " |" * (len(head) - 2))
            continue
        row = [mode, f"{100 * s['AA']:.1f}", f"{100 * s['OA']:.1f}",
               f"{100 * s['AA_boxed']:.1f}" if "AA_boxed" in s else "-"]
        row += [f"{100 * s['categories'][c]:.0f}" if c in s["categories"] else "-" for c in cats]
        row += [f"{100 * s['asked_kind']:.0f}%" if "asked_kind" in s else "-"]
        row += [f"{s['llm_vision_tokens']:.0f}",
                f"{100 * s['tokens_vs_full']:.2f}%" if "tokens_vs_full" in s else "-",
                f"{s['tiles_encoded']:.1f}", f"{s['seconds']:.2f}",
                f"{100 * s['localisation']:.0f}% of {s['boxed_questions']}" if "localisation" in s else "-",
                f"{100 * s['box_followed']:.0f}%" if "box_followed" in s else "-",
                f"{s['final_level']:.1f}" if "final_level" in s else "-",
                f"{100 * s['finest_reached']:.0f}%" if "finest_reached" in s and "final_level" in s else "-",
                (f"{100 * s['finest_reached_single']:.0f}% / "
                 + (f"{100 * s['followed_single']:.0f}%" if "followed_single" in s else "-")
                 + f" of {s['single_object_questions']}") if "finest_reached_single" in s else "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def figure(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for mode, s in summary.items():
        if "AA" in s:
            ax.scatter(s["llm_vision_tokens"], 100 * s["AA"], s=40)
            ax.annotate(mode, (s["llm_vision_tokens"], 100 * s["AA"]), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("LLM vision tokens per question (log)")
    ax.set_ylabel("AA (%)")
    ax.set_title("default model on the synthetic test split")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--stride", type=int, default=2,
                        help="every N-th question of each scene (the split has 40 per scene)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated; also '{BLIND}' (no image), '{ORACLE}' and '{ORACLE_DIP}' "
                             "(diagnostics, the last two boxed questions only); '@SELECTION' after dip picks the selection, "
                             "e.g. dip@paper,dip@mass,oracle-dip@mass; parameters joined by +, e.g. dip@focus:tile_budget=32+min_tokens=8")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "default"))
    parser.add_argument("--data", default=None, help="scene + question folder (default OUT/data)")
    parser.add_argument("--n-max", type=int, default=None, help="tile cap (default: the bundle's)")
    parser.add_argument("--alpha", type=float, default=None, help="keep ratio (default: the bundle's)")
    parser.add_argument("--time-limit", type=float, default=0,
                        help="seconds; stop answering new questions after this (0: none)")
    args = parser.parse_args(argv)

    from rs_vqa_plugin.engine.pipeline import Engine
    from rs_vqa_plugin.modeling.quiet import quiet_model_libraries

    quiet_model_libraries()
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    out.mkdir(parents=True, exist_ok=True)
    questions = make_split_data(args.split, args.scenes, args.stride, data)
    # cold questions: the tile cache is measured by bench_tile_cache.py
    engine = Engine(args.model, device="cpu", tile_cache_mb=0)
    engine.shadow_rfm = True     # oracle runs also record where the RFM ranked the box
    modes = [m for m in args.modes.split(",") if m]
    started = time.perf_counter()
    # Interleave the modes per question batch so a time limit cuts every mode equally.
    chunk = 10
    summary = {}
    for start in range(0, len(questions), chunk):
        if args.time_limit and time.perf_counter() - started > args.time_limit:
            print(f"time limit reached after {start} questions", file=sys.stderr)
            break
        part = questions[:start + chunk]
        for mode in modes:
            run_mode(engine, part, data, mode, out / f"answers.{args.split}.{mode}.jsonl", args.n_max,
                     args.alpha)
        print(f"{min(start + chunk, len(questions))}/{len(questions)} questions, "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    answered = {}
    for mode in modes:
        path = out / f"answers.{args.split}.{mode}.jsonl"
        records = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
        answered_ids = {r["question_id"] for r in records}
        answered[mode] = [q for q in questions if q["question_id"] in answered_ids]
        summary[mode] = summarise(answered[mode], records)
    result = {"split": args.split, "model": args.model, "scenes": sorted({q["image"] for q in questions}),
              "modes": summary}
    blind = None
    if BLIND in summary and "categories" in summary[BLIND]:
        blind = blind_columns(args.split, answered[BLIND], summary[BLIND]["categories"])
        result["blind"] = blind
    (out / f"results.{args.split}.json").write_text(json.dumps(result, indent=2) + "\n")
    try:
        figure(summary, out / f"accuracy_tokens.{args.split}.png")
    except ImportError:
        pass
    print(table(summary))
    if blind is not None:
        from rs_vqa_plugin.benchmark.baselines import blind_table

        print(f"\nblind ({args.split}, {len(answered[BLIND])} questions, accuracy %; template / words: "
              "text-only predictors learnt on train):")
        print(blind_table(answered[BLIND], blind["accuracy"]))
    return 0


def blind_columns(split: str, questions, blind: dict) -> dict:
    """Chance levels of the blind mode's questions, and the blind model's per-category accuracy
    beside the text-only predictors' (learnt on train, so not measured on train)."""
    from rs_vqa_plugin.benchmark.baselines import chance_levels, text_baselines
    from rs_vqa_plugin.benchmark.generate import split_questions

    accuracy = {"blind model": blind}
    if split != "train":
        accuracy.update(text_baselines(split_questions("train"), questions))
    return {"chance": chance_levels(questions), "accuracy": accuracy}


if __name__ == "__main__":
    sys.exit(main())
