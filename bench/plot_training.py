"""Plot a train-default run's log (OUT_DIR/train.log): losses and val scores against the step.

    python bench/plot_training.py RUN_DIR/train.log OUT.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(l) for l in Path(argv[0]).read_text().splitlines() if l.strip()]
    steps = [r for r in records if "loss" in r and "step" in r]
    vals = [r for r in records if r.get("event") == "val"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for key in ("lm", "distill", "ground", "rfm_box"):
        left.plot([r["step"] for r in steps], [r[key] for r in steps], label=key, lw=1)
    left.set_xlabel("step")
    left.set_ylabel("loss (per batch)")
    left.set_yscale("log")
    left.legend(fontsize=8)
    for key in ("em_thumbnail", "em_level1", "em_zoom", "em_zoom-pruned", "rfm_box_hit"):
        pts = [(r["step"], r[key]) for r in vals if r.get(key) is not None]
        if pts:
            right.plot(*zip(*pts), marker="o", label=key, lw=1)
    right.set_xlabel("step")
    right.set_ylabel("val (teacher-forced exact match / RFM box hit)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(argv[1], dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
