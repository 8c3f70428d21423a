"""`demo`: the main job on the bundled default model: a synthetic scene, three questions answered
coarse to fine with their traces, the heatmap as a GeoPackage, and how to open both in QGIS."""

from __future__ import annotations

from ..engine.errors import BundleError

HELP = "run the main job on the bundled default model: a demo scene, three questions, a heatmap"

DEMO_SEED = 42            # outside every benchmark split's seed range
DEMO_SIZE = 4096
# One question of each of these categories, in this order, when the scene has one.
DEMO_CATEGORIES = ("object color", "object category", "rural or urban", "object background",
                   "count")


def add_arguments(parser):
    parser.add_argument("--out", default="demo_output", help="folder for the scene and heatmap")
    parser.add_argument("--model", default=None, help="model bundle (default: models/default)")
    parser.add_argument("--size", type=int, default=DEMO_SIZE, help=f"scene size in px ({DEMO_SIZE})")
    parser.add_argument("--mode", default="dip", help="engine mode (dip)")


def pick_questions(sidecar: dict, count: int = 3):
    from ..benchmark.questions import questions_for_scene

    pool = questions_for_scene(sidecar, 40)
    chosen = []
    for category in DEMO_CATEGORIES:
        for q in pool:
            if q["category"] == category and q not in chosen:
                chosen.append(q)
                break
        if len(chosen) == count:
            break
    return chosen + [q for q in pool if q not in chosen][:count - len(chosen)]


def run(args) -> int:
    import sys
    from pathlib import Path

    from ..benchmark.generate import make_scene
    from ..benchmark.scene import read_sidecar, sidecar_path
    from ..engine.heatmap import write_heatmap
    from ..engine.pipeline import AskOptions, Engine
    from ..engine.scoring import is_correct
    from ..paths import default_model_dir

    model = Path(args.model) if args.model else default_model_dir()
    if not (model / "manifest.json").exists():
        raise BundleError(f"No model bundle in {model}: train one with `python -m rs_vqa_plugin "
                          "train-default OUT_DIR --copy-to models/default`, or pass --model.")
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    scene = out / f"demo_scene_{DEMO_SEED}_{args.size}.tif"
    if scene.is_file() and sidecar_path(scene).is_file():
        print(f"reusing the demo scene {scene}", file=sys.stderr)
    else:
        print(f"making the demo scene {scene} ({args.size} x {args.size} px) ...", file=sys.stderr)
        make_scene(scene, DEMO_SEED, args.size, args.size)
    sidecar = read_sidecar(sidecar_path(scene))
    engine = Engine(model, device="auto")
    answers = []
    for number, q in enumerate(pick_questions(sidecar), start=1):
        answer = engine.ask(scene, q["text"], AskOptions(mode=args.mode, max_new_tokens=8))
        answers.append(answer)
        t = answer.trace
        verdict = "right" if is_correct(q["ground_truth"], answer.text) else "wrong"
        print(f"\nQ{number} [{q['category']}] {q['text']}")
        print(f"  answer: {answer.text!r}   (scene truth: {q['ground_truth']!r}, {verdict})")
        print(f"  looked at levels {t['levels']} of {len(t['pyramid'])} "
              f"(long sides {[p['long_side'] for p in t['pyramid']]}), tiles per level "
              f"{t['tiles_per_level']}, stop: {t['stop_reason']}")
        print(f"  LLM vision tokens {t['llm_vision_tokens']} (thumbnail {t['thumbnail_tokens']} + "
              f"kept {t['kept_tokens']} + {t['kept_rows']} newlines), {t['seconds']['total']:.2f} s "
              f"on {t['device']}")
        if q.get("hbox"):
            print(f"  the box asked about (scene truth) is at pixels {q['hbox']} (x1, y1, x2, y2)")
    # The demo's own file in its own folder: a rerun replaces its layer (other layers are kept).
    heatmap = write_heatmap(answers, out / "demo_heatmap.gpkg", overwrite=True)
    print(f"\nheatmap of where the model looked: {heatmap} (layer 'heatmap', one feature per kept "
          "token and per tile read; fields question, score, level, tile, rank, kind)")
    print("\nOpen both in QGIS:\n"
          f"  qgis {scene} {heatmap}\n"
          "  or Layer > Add Layer > Add Raster Layer... (the .tif), then Add Vector Layer... (the "
          ".gpkg);\n"
          "  style the heatmap by 'score' (Symbology > Graduated) and filter one question with "
          "\"question\" = '...'; the plugin's dock (rs-vqa) asks new questions on the same layer.")
    return 0
