"""LRS-VQA questions from scene sidecars: eight categories, unique references, closed vocabulary answers,
balanced across categories and, within a category, across answers.

The wording must not give the answer away (a benchmark of perception; baselines.py measures it):
objects are named by a region of the image, never by the context that fixes their background or
status, and with only the words that do not imply the asked attribute (ATTRIBUTE_REFERENCES);
answers are also balanced per colour word, region, reasoning form and counted noun (Balancer keys)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Dict, Iterable, List, NamedTuple, Optional

import numpy as np

from .references import (BACKGROUNDS, CATEGORIES as OBJECT_CATEGORIES, COLORS, EXTREMES, PLURALS, REGIONS,
                         RURAL_SHARE, SHAPES, STATUSES, URBAN_SHARE, RegionObjects, around_box, around_name,
                         context_phrase, filter_objects, objects_in, reference_text, region_box, region_phrase,
                         urban_share)

SUFFIX = " Answer the question using a single word or phrase."
SUBSET = "SYNTH"
CATEGORIES = ("count", "object background", "object category", "object color", "object shape",
              "object status", "reasoning", "rural or urban")
MAX_COUNT = 20            # "how many" answers stay countable
# Bumped whenever the same scene gives other questions, so that cached question files are redone.
# 2: objects named by regions of the image, balance keys (1: named by their context).
QUESTIONS_VERSION = 2
# The closed answer vocabulary of each category (chance levels are taken over these).
ANSWERS = {"count": tuple(str(n) for n in range(MAX_COUNT + 1)), "object background": BACKGROUNDS,
           "object category": OBJECT_CATEGORIES, "object color": COLORS, "object shape": SHAPES,
           "object status": STATUSES, "reasoning": ("yes", "no"), "rural or urban": ("rural", "urban")}


def _union(*boxes) -> List[int]:
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


ATTRIBUTE_QUESTIONS = {    # category: (sidecar field, question)
    "object color": ("color", "What is the color of {ref}?"),
    "object category": ("category", "What kind of object is {ref}?"),
    "object shape": ("shape", "What is the shape of {ref}?"),
    "object status": ("status", "What is the status of {ref}?"),
    "object background": ("background", "What is the background of {ref}?"),
}


class Reference(NamedTuple):
    text: str               # "the left-most red object in the north-west quarter of the image"
    obj: dict
    noun: str               # "object" or an object category
    color: Optional[str]
    extreme: Optional[str]
    region: str


POSITIONS = ("top-most", "bottom-most", "left-most", "right-most")
# What an attribute question may say about its object: words that imply the answer are left out
# (the noun names the category, which fixes the shape and narrows status and background; "largest"
# and "smallest" point at ships and aircraft). Regions never say which context the object is in.
ATTRIBUTE_REFERENCES = {   # category: (nouns other than "object" allowed, colour words, extremes)
    "object color": (True, False, (None,) + EXTREMES),
    "object category": (False, True, (None,) + POSITIONS),
    "object shape": (False, True, (None,) + POSITIONS),
    "object status": (False, True, (None,) + POSITIONS),
    "object background": (False, True, (None,) + POSITIONS),
}


def _references(sidecar: dict) -> List[Reference]:
    """Every reference naming exactly one object by a region of the image (references.RegionObjects)."""
    refs = []
    for region in ("area",) + tuple(REGIONS):
        found = RegionObjects(sidecar, region)
        phrase = region_phrase(region)
        nouns = ["object"] + sorted({o["category"] for o in found.objects})
        colors = [None] + sorted({o["color"] for o in found.objects})
        for noun in nouns:
            for color in colors:
                if not filter_objects(found.objects, noun, color):
                    continue
                for extreme in (None,) + EXTREMES:
                    obj = found.pick(noun, color, extreme)
                    if obj is not None:
                        refs.append(Reference(reference_text(noun, color, extreme, phrase), obj, noun, color,
                                              extreme, region))
    return refs


def _allowed(ref: Reference, category: str) -> bool:
    nouns, colors, extremes = ATTRIBUTE_REFERENCES[category]
    return (nouns or ref.noun == "object") and (colors or ref.color is None) and ref.extreme in extremes


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
    for category, (attribute, template) in ATTRIBUTE_QUESTIONS.items():
        for ref in refs:
            answer = ref.obj.get(attribute)
            if answer and _allowed(ref, category):
                # neither the colour word nor the region may predict the answer (what lies where
                # is the layout's prior): answers are balanced per colour and per region too
                cands[category].append({"text": template.format(ref=ref.text), "answer": answer,
                                        "hbox": list(ref.obj["bbox"]),
                                        "balance": (f"color {ref.color}", f"region {ref.region}"),
                                        # one question per object and attribute, however it is named
                                        "subject": f"{category} {ref.obj['id']}"})
    counts = _counts(sidecar)
    for phrase, ctx, noun, color, status, n in counts:
        words = " ".join(w for w in (color, PLURALS[noun], "are", status, phrase) if w)
        # few helicopters, many vehicles: the noun must not tell the number
        cands["count"].append({"text": f"How many {words}?", "answer": str(n), "hbox": None,
                               "balance": (f"noun {noun}",)})
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


def _reasoning(sidecar, refs: List[Reference], counts, out: list, limit: int = 200):
    """Four forms, each balanced on its own (balance keys): a form's answer must not follow from
    its wording, so comparisons are between objects of one kind (in places of one kind for "more"),
    "larger" never names a size extreme and "same color" never names a colour."""
    rng = np.random.default_rng([int(sidecar["seed"]), 3])
    plain = [c for c in counts if c[3] is None and c[4] is None]
    for i, a in enumerate(plain):
        for b in plain[i + 1:]:
            # the same kind of object in two contexts of the same kind: which of two kinds of
            # place holds more (airport or apron, harbour or sea) is the generator's prior, not seen
            if a[2] != b[2] or a[1]["kind"] != b[1]["kind"] or a[1]["id"] == b[1]["id"] or a[5] == b[5]:
                continue
            out.append({"text": f"Are there more {PLURALS[a[2]]} {a[0]} than {PLURALS[b[2]]} {b[0]}?",
                        "answer": "yes" if a[5] > b[5] else "no", "hbox": _union(a[1]["bbox"], b[1]["bbox"]),
                        "balance": ("more",)})
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
                            "hbox": list(ctx["bbox"]), "balance": ("exists", f"exists {noun} {ctx['kind']}",
                                                                   f"exists {color}")})
    named = [r for r in refs if r.noun != "object"]
    for noun in sorted({r.noun for r in named}):
        sized = [r for r in named if r.noun == noun and r.extreme not in ("largest", "smallest")]
        for a, b in _pairs(sized, limit, rng):
            if max(a.obj["size_px"], b.obj["size_px"]) >= 1.25 * min(a.obj["size_px"], b.obj["size_px"]):
                out.append({"text": f"Is {a.text} larger than {b.text}?",
                            "answer": "yes" if a.obj["size_px"] > b.obj["size_px"] else "no",
                            "hbox": _union(a.obj["bbox"], b.obj["bbox"]), "balance": ("larger", f"larger {noun}")})
    for a, b in _pairs([r for r in named if r.color is None], limit, rng):
        out.append({"text": f"Are {a.text} and {b.text} the same color?",
                    "answer": "yes" if a.obj["color"] == b.obj["color"] else "no",
                    "hbox": _union(a.obj["bbox"], b.obj["bbox"]), "balance": ("same color",)})


def _pairs(refs: List[Reference], limit: int, rng: np.random.Generator):
    """Up to `limit` random pairs of references to two different objects."""
    if len(refs) < 2:
        return []
    pairs = []
    for _ in range(limit):
        i, j = rng.choice(len(refs), 2, replace=False)
        if refs[int(i)].obj["id"] != refs[int(j)].obj["id"]:
            pairs.append((refs[int(i)], refs[int(j)]))
    return pairs


class Balancer:
    """Picks questions so that categories get equal shares and answers spread out within a category
    and within each of a question's balance keys (a reasoning form, the colour word of a
    reference ...): no word of the question may predict its answer."""

    def __init__(self):
        self.answers: Dict[str, Counter] = defaultdict(Counter)

    def _keys(self, q: dict):
        return (q["category"],) + tuple(f"{q['category']}/{k}" for k in q.get("balance", ()))

    def _seen(self, q: dict) -> int:
        return sum(self.answers[k][q["answer"]] for k in self._keys(q))

    def choose(self, pool: List[dict], n: int, rng: np.random.Generator, used: set) -> List[dict]:
        chosen = []
        pool = [pool[i] for i in rng.permutation(len(pool))]
        for _ in range(n):
            options = [q for q in pool if _free(q, used)]
            if not options:
                break
            best = min(options, key=self._seen)
            used.add(best["text"])
            if best.get("subject"):
                used.add(best["subject"])
            for key in self._keys(best):
                self.answers[key][best["answer"]] += 1
            chosen.append(best)
        return chosen


def _free(q: dict, used: set) -> bool:
    """Not asked yet in this scene, nor its object's attribute under another name."""
    return q["text"] not in used and q.get("subject") not in used


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
        spare = [c for c in sorted(CATEGORIES, key=lambda c: have[c])
                 if any(_free(q, used) for q in pools.get(c, []))]
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
