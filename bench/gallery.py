"""Gallery: for sample questions, the 336 px thumbnail, the box region as the thumbnail holds it and the
full-resolution region, side by side in one PNG each, plus index.md with question and answer.
    .venv/bin/python bench/gallery.py SCENE_DIR QUESTIONS.jsonl --out DIR [--n 8] [--categories ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    from osgeo import gdal

    from rs_vqa_plugin.benchmark.gallery import question_panels, thumbnail, write_png
    from rs_vqa_plugin.engine.scoring import read_jsonl

    gdal.UseExceptions()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene_dir")
    parser.add_argument("questions")
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=8, help="number of questions (spread over categories)")
    parser.add_argument("--categories", nargs="*", default=["object color", "object status", "object shape",
                                                               "object category", "object background"])
    parser.add_argument("--ids", nargs="*", help="question ids to draw (instead of sampling)")
    parser.add_argument("--bits", type=int, default=8, choices=range(4, 9), metavar="4..8",
                        help="bits per channel kept (6 makes README-sized PNGs of about 150 KB)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    questions = [q for q in read_jsonl(args.questions) if "hbox" in q]
    if args.ids:
        chosen = [q for q in questions if q["question_id"] in set(args.ids)]
    else:
        by_cat = {c: [q for q in questions if q["category"] == c] for c in args.categories}
        chosen, k = [], 0
        while len(chosen) < args.n and any(by_cat.values()):
            cat = args.categories[k % len(args.categories)]
            if by_cat[cat]:
                chosen.append(by_cat[cat].pop(len(by_cat[cat]) // 2))
            k += 1
    lines = ["# Gallery: thumbnail (336 px) | the box region in the thumbnail | the box region at full resolution", ""]
    thumbs = {}
    for q in chosen:
        ds = gdal.Open(str(Path(args.scene_dir) / q["image"]))
        if q["image"] not in thumbs:
            thumbs[q["image"]] = thumbnail(ds)
        thumb, scale = thumbs[q["image"]]
        png = out / f"{q['question_id']}.png"
        panels = question_panels(ds, q["hbox"], thumb, scale)
        if args.bits < 8:
            drop = 8 - args.bits
            panels = ((panels >> drop) << drop) | (1 << (drop - 1))
        write_png(panels.astype("uint8"), png)
        text = q["text"].replace(" Answer the question using a single word or phrase.", "")
        lines.append(f"- `{png.name}` ({q['image']}, {q['image_size'][0]} px, {q['category']}): {text} -> "
                     f"**{q['ground_truth']}** (box {q['hbox']})")
        print(png, "|", text, "->", q["ground_truth"])
    (out / "index.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
