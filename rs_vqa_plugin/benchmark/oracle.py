"""An oracle that answers the synthetic questions from the scene sidecar alone, by parsing the question
text and resolving its references again: proof that every answer is recoverable from the sidecar."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from .references import (BACKGROUNDS, CATEGORIES, COLORS, EXTREMES, PLURALS, SINGULARS, STATUSES, URBAN_SHARE,
                         RURAL_SHARE, RegionObjects, around_box, around_name, filter_objects, objects_in, pick,
                         region_box, region_of_phrase, resolve_context, urban_share)
from .scene import read_sidecar

_alt = lambda words: "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))  # noqa: E731
NOUN = _alt(("object",) + CATEGORIES)
REF = re.compile(rf"^the (?:(?P<extreme>{_alt(EXTREMES)}) )?(?:(?P<color>{_alt(COLORS)}) )?(?P<noun>{NOUN}) "
                 rf"(?P<ctx>(?:at|on|in) .+)$")
ATTRIBUTE = re.compile(r"^What (?:is the (?P<attr>color|shape|status|background) of|kind of object is) (?P<ref>the .+)\?$")
COUNT = re.compile(rf"^How many (?:(?P<color>{_alt(COLORS)}) )?(?P<plural>{_alt(PLURALS.values())}) are "
                   rf"(?:(?P<status>{_alt(STATUSES)}) )?(?P<ctx>(?:at|on|in) .+)\?$")
MORE = re.compile(rf"^Are there more (?P<p1>{_alt(PLURALS.values())}) (?P<c1>.+?) than "
                  rf"(?P<p2>{_alt(PLURALS.values())}) (?P<c2>.+)\?$")
LARGER = re.compile(r"^Is (?P<r1>the .+?) larger than (?P<r2>the .+)\?$")
SAME = re.compile(r"^Are (?P<r1>the .+?) and (?P<r2>the .+) the same color\?$")
EXISTS = re.compile(rf"^Is there an? (?P<color>{_alt(COLORS)}) (?P<noun>{NOUN}) (?P<ctx>(?:at|on|in) .+)\?$")
RURAL = re.compile(r"^Is the (?P<region>.+?)(?: of the image| in the image) rural or urban\?$")
AROUND = re.compile(r"^Is the area around (?P<name>the .+) rural or urban\?$")
SUFFIX = " Answer the question using a single word or phrase."
UNKNOWN = "unknown"
assert "background" not in BACKGROUNDS  # attribute names and answers never overlap


def _rural_or_urban(share: float) -> str:
    return "urban" if share >= (URBAN_SHARE + RURAL_SHARE) / 2 else "rural"


def _context(sidecar, phrase) -> Optional[dict]:
    return resolve_context(sidecar, phrase)


def _count(sidecar, plural, phrase, color=None, status=None) -> Optional[int]:
    ctx = _context(sidecar, phrase)
    if ctx is None:
        return None
    return len(filter_objects(objects_in(sidecar, ctx), SINGULARS[plural], color, status))


def resolve_reference(sidecar: dict, text: str) -> Optional[dict]:
    m = REF.match(text)
    if not m:
        return None
    region = region_of_phrase(m["ctx"])
    if region is not None:
        return RegionObjects(sidecar, region).pick(m["noun"], m["color"], m["extreme"])
    # named by a context: the generator's earlier form, still answered for older question files
    ctx = _context(sidecar, m["ctx"])
    if ctx is None:
        return None
    return pick(filter_objects(objects_in(sidecar, ctx), m["noun"], m["color"]), m["extreme"])


def answer(sidecar: dict, question: str) -> str:
    """The answer to one question (with or without the LRS-VQA suffix); 'unknown' if unresolvable."""
    q = question[:-len(SUFFIX)] if question.endswith(SUFFIX) else question
    if m := ATTRIBUTE.match(q):
        obj = resolve_reference(sidecar, m["ref"])
        if obj is None:
            return UNKNOWN
        return str(obj["category"] if m["attr"] is None else obj[m["attr"]])
    if m := COUNT.match(q):
        n = _count(sidecar, m["plural"], m["ctx"], m["color"], m["status"])
        return UNKNOWN if n is None else str(n)
    if m := MORE.match(q):
        a, b = _count(sidecar, m["p1"], m["c1"]), _count(sidecar, m["p2"], m["c2"])
        return UNKNOWN if a is None or b is None else ("yes" if a > b else "no")
    if m := LARGER.match(q):
        a, b = resolve_reference(sidecar, m["r1"]), resolve_reference(sidecar, m["r2"])
        return UNKNOWN if a is None or b is None else ("yes" if a["size_px"] > b["size_px"] else "no")
    if m := SAME.match(q):
        a, b = resolve_reference(sidecar, m["r1"]), resolve_reference(sidecar, m["r2"])
        return UNKNOWN if a is None or b is None else ("yes" if a["color"] == b["color"] else "no")
    if m := EXISTS.match(q):
        ctx = _context(sidecar, m["ctx"])
        if ctx is None:
            return UNKNOWN
        return "yes" if filter_objects(objects_in(sidecar, ctx), m["noun"], m["color"]) else "no"
    if m := AROUND.match(q):
        ctx = next((c for c in sidecar["contexts"] if around_name(sidecar, c) == m["name"]), None)
        if ctx is None:
            return UNKNOWN
        return _rural_or_urban(urban_share(sidecar, around_box(sidecar, ctx)))
    if m := RURAL.match(q):
        try:
            return _rural_or_urban(urban_share(sidecar, region_box(sidecar, m["region"])))
        except KeyError:
            return UNKNOWN
    return UNKNOWN


def answer_file(questions: Iterable[dict], scene_dir) -> List[Dict[str, str]]:
    """Answer records ({question_id, text}) for LRS-VQA question records whose images are in scene_dir."""
    cache: Dict[str, dict] = {}
    out = []
    for q in questions:
        image = q["image"]
        if image not in cache:
            cache[image] = read_sidecar(Path(scene_dir) / image)
        out.append({"question_id": q["question_id"], "text": answer(cache[image], q["text"])})
    return out
