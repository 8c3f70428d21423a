"""LRS-VQA questions from scene sidecars: eight categories, unique references, closed vocabulary answers,
balanced across categories and, within a category, across answers."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Optional

import numpy as np

from .references import (BACKGROUNDS, CATEGORIES as OBJECT_CATEGORIES, COLORS, EXTREMES, PLURALS, REGIONS,
                         RURAL_SHARE, SHAPES, STATUSES, URBAN_SHARE, around_box, around_name, context_phrase,
                         filter_objects, objects_in, pick, reference_text, region_box, urban_share)

SUFFIX = " Answer the question using a single word or phrase."
SUBSET = "SYNTH"
CATEGORIES = ("count", "object background", "object category", "object color", "object shape",
              "object status", "reasoning", "rural or urban")
MAX_COUNT = 20            # "how many" answers stay countable
# The closed answer vocabulary of each category (chance levels are taken over these).
ANSWERS = {"count": tuple(str(n) for n in range(MAX_COUNT + 1)), "object background": BACKGROUNDS,
           "object category": OBJECT_CATEGORIES, "object color": COLORS, "object shape": SHAPES,
           "object status": STATUSES, "reasoning": ("yes", "no"), "rural or urban": ("rural", "urban")}


def _union(*boxes) -> List[int]:
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def _references(sidecar: dict):
    """Every (text, object, noun, colour-in-text) naming exactly one object in a named context."""
    refs = []
    for ctx in sidecar["contexts"]:
        phrase = context_phrase(sidecar, ctx)
        if phrase is None:
            continue
        objs = objects_in(sidecar, ctx)
        nouns = ["object"] + sorted({o["category"] for o in objs})
        colors = [None] + sorted({o["color"] for o in objs})
        for noun in nouns:
            for color in colors:
                cands = filter_objects(objs, noun, color)
                if not cands:
                    continue
                for extreme in (None,) + EXTREMES:
                    obj = pick(cands, extreme)
                    if obj is not None:
                        refs.append((reference_text(noun, color, extreme, phrase), obj, noun, color, ctx))
    return refs


def _counts(sidecar: dict):
    """(phrase, ctx, noun, colour, status, count) for countable groups in named contexts."""
    out = []
    for ctx in sidecar["contexts"]:
        phrase = context_phrase(sidecar, ctx)
        if phrase is None:
            continue
        objs = objects_in(sidecar, ctx)
        for noun in sorted({o["category"] for o in objs}):
            group = filter_objects(objs, noun)
            statuses = [None] + sorted({o["status"] for o in group if o.get("status")})
            colors = [None] + sorted({o["color"] for o in group})
            for status in statuses:
                for color in colors:
                    if status and color:
                        continue
                    n = len(filter_objects(group, noun, color, status))
                    if n <= MAX_COUNT:
                        out.append((phrase, ctx, noun, color, status, n))
    return out


def candidates(sidecar: dict) -> Dict[str, List[dict]]:
    """All askable questions of a scene, by category: {category: [{text, answer, hbox}]}."""
    cands: Dict[str, List[dict]] = defaultdict(list)
    refs = _references(sidecar)
    for text, obj, noun, color, ctx in refs:
        box = list(obj["bbox"])
        if color is None:
            cands["object color"].append({"text": f"What is the color of {text}?", "answer": obj["color"], "hbox": box})
        if noun == "object":
            cands["object category"].append({"text": f"What kind of object is {text}?", "answer": obj["category"],
                                             "hbox": box})
        cands["object shape"].append({"text": f"What is the shape of {text}?", "answer": obj["shape"], "hbox": box})
        if obj.get("status"):
            cands["object status"].append({"text": f"What is the status of {text}?", "answer": obj["status"],
                                           "hbox": box})
        cands["object background"].append({"text": f"What is the background of {text}?",
                                           "answer": obj["background"], "hbox": box})
    counts = _counts(sidecar)
    for phrase, ctx, noun, color, status, n in counts:
        words = " ".join(w for w in (color, PLURALS[noun], "are", status, phrase) if w)
        cands["count"].append({"text": f"How many {words}?", "answer": str(n), "hbox": None})
    _reasoning(sidecar, refs, counts, cands["reasoning"])
    regions = [(f"Is the {r} of the image rural or urban?", region_box(sidecar, r)) for r in REGIONS]
    regions.append(("Is the area in the image rural or urban?", region_box(sidecar, "area")))
    for ctx in sidecar["contexts"]:
        name = around_name(sidecar, ctx)
        if name:
            regions.append((f"Is the area around {name} rural or urban?", around_box(sidecar, ctx)))
    for text, box in regions:
        share = urban_share(sidecar, box)
        if RURAL_SHARE < share < URBAN_SHARE:
            continue
        cands["rural or urban"].append({"text": text, "answer": "urban" if share >= URBAN_SHARE else "rural",
                                        "hbox": box})
    return cands


def _reasoning(sidecar, refs, counts, out: list, limit: int = 400):
    rng = np.random.default_rng([int(sidecar["seed"]), 3])
    plain = [c for c in counts if c[3] is None and c[4] is None]
    for i, a in enumerate(plain):
        for b in plain[i + 1:]:
            if a[1]["id"] == b[1]["id"] or a[5] == b[5]:
                continue
            out.append({"text": f"Are there more {PLURALS[a[2]]} {a[0]} than {PLURALS[b[2]]} {b[0]}?",
                        "answer": "yes" if a[5] > b[5] else "no", "hbox": _union(a[1]["bbox"], b[1]["bbox"])})
    colors = sorted({o["color"] for o in sidecar["objects"]})
    for ctx in sidecar["contexts"]:
        phrase = context_phrase(sidecar, ctx)
        if phrase is None:
            continue
        objs = objects_in(sidecar, ctx)
        for noun in sorted({o["category"] for o in objs}):
            for color in colors:
                n = len(filter_objects(objs, noun, color))
                article = "an" if color[0] in "aeiou" else "a"
                out.append({"text": f"Is there {article} {color} {noun} {phrase}?", "answer": "yes" if n else "no",
                            "hbox": list(ctx["bbox"])})
    named = [r for r in refs if r[2] != "object"]
    if len(named) > 1:
        for _ in range(limit):
            i, j = rng.choice(len(named), 2, replace=False)
            (ta, oa, *_), (tb, ob, *_) = named[int(i)], named[int(j)]
            if oa["id"] == ob["id"]:
                continue
            box = _union(oa["bbox"], ob["bbox"])
            if max(oa["size_px"], ob["size_px"]) >= 1.25 * min(oa["size_px"], ob["size_px"]):
                out.append({"text": f"Is {ta} larger than {tb}?", "answer": "yes" if oa["size_px"] > ob["size_px"]
                            else "no", "hbox": box})
            out.append({"text": f"Are {ta} and {tb} the same color?", "answer": "yes" if oa["color"] == ob["color"]
                        else "no", "hbox": box})


class Balancer:
    """Picks questions so that categories get equal shares and answers within a category spread out."""

    def __init__(self):
        self.answers: Dict[str, Counter] = defaultdict(Counter)

    def choose(self, pool: List[dict], n: int, rng: np.random.Generator, used: set) -> List[dict]:
        chosen = []
        pool = [pool[i] for i in rng.permutation(len(pool))]
        for _ in range(n):
            options = [q for q in pool if q["text"] not in used]
            if not options:
                break
            seen = self.answers[options[0]["category"]]
            best = min(options, key=lambda q: seen[q["answer"]])
            used.add(best["text"])
            seen[best["answer"]] += 1
            chosen.append(best)
        return chosen


def questions_for_scene(sidecar: dict, per_scene: int, balancer: Optional[Balancer] = None,
                        subset: str = SUBSET) -> List[dict]:
    """LRS-VQA records for one scene (question_id = <subset>_<seed>_<n>)."""
    balancer = balancer or Balancer()
    rng = np.random.default_rng([int(sidecar["seed"]), 17])
    pools = candidates(sidecar)
    for category, pool in pools.items():
        for q in pool:
            q["category"] = category
    share, extra = divmod(per_scene, len(CATEGORIES))
    order = list(rng.permutation(len(CATEGORIES)))
    wanted = {CATEGORIES[k]: share + (1 if rank < extra else 0) for rank, k in enumerate(order)}
    used: set = set()
    picked = []
    for category in CATEGORIES:
        picked += balancer.choose(pools.get(category, []), wanted[category], rng, used)
    # categories that ran short: top up from the others, smallest share first
    while len(picked) < per_scene:
        have = Counter(q["category"] for q in picked)
        spare = [c for c in sorted(CATEGORIES, key=lambda c: have[c]) if any(
            q["text"] not in used for q in pools.get(c, []))]
        if not spare:
            break
        picked += balancer.choose(pools[spare[0]], 1, rng, used)
    w, h = sidecar["size"]
    records = []
    for n, q in enumerate(picked):
        record = {"question_id": f"{subset}_{sidecar['seed']}_{n:03d}", "image": sidecar["image"],
                  "text": q["text"] + SUFFIX, "category": q["category"], "ground_truth": q["answer"],
                  "image_size": [w, h]}
        if q["category"] != "count":
            record["hbox"] = [int(v) for v in q["hbox"]]
        records.append(record)
    return records


def questions_for_scenes(sidecars: Iterable[dict], per_scene: int) -> List[dict]:
    """Records for scenes in order, one balancer over all of them (what a split's jsonl holds)."""
    balancer = Balancer()
    records: List[dict] = []
    for sidecar in sidecars:
        records += questions_for_scene(sidecar, per_scene, balancer)
    return records


def category_balance(records: Iterable[dict]) -> Dict[str, dict]:
    """{category: {"n": count, "answers": {answer: count}}} for reports and tests."""
    out: Dict[str, dict] = {}
    for r in records:
        entry = out.setdefault(r["category"], {"n": 0, "answers": Counter()})
        entry["n"] += 1
        entry["answers"][r["ground_truth"]] += 1
    return {c: {"n": e["n"], "answers": dict(e["answers"].most_common())} for c, e in sorted(out.items())}
