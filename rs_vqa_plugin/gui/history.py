"""The conversations per raster layer: turns, project persistence and Markdown/CSV export."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from ..engine import spreadsheet_safe_row, tiles_used

PROJECT_SCOPE = "rs_vqa"
PROJECT_KEY = "conversations"


@dataclass
class Turn:
    question: str
    text: str = ""
    status: str = "asking"          # asking | answered | stopped | failed
    message: str = ""               # why it stopped or failed
    # seconds (what the person waited), parts (model load, overviews, answer), tiles, llm_tokens,
    # levels
    stats: Dict[str, object] = field(default_factory=dict)
    heat_layer_id: str = ""
    heat_path: str = ""
    request_id: str = ""
    note: str = ""                  # said once under an answer (e.g. a demonstration model's)

    @property
    def finished(self) -> bool:
        return self.status != "asking"


PART_LABELS = {"load": "model load", "overviews": "overviews", "answer": "answer"}
SHOWN_PART_S = 0.05     # parts shorter than this are not worth a mention


def stats_from_trace(trace: dict) -> Dict[str, object]:
    seconds = trace.get("seconds") or {}
    return {"seconds": round(float(seconds.get("total", 0.0) or 0.0), 2),
            "tiles": tiles_used(trace),
            "llm_tokens": int(trace.get("llm_tokens", 0) or 0),
            "levels": list(trace.get("levels") or [])}


def waited_stats(trace: dict, waited: float, load: float = 0.0,
                 overviews: float = 0.0) -> Dict[str, object]:
    """The stats of an answer with `seconds` = what the person waited (send to answer), and its
    parts: the model load, the overviews built, and the answer itself. The engine's own total
    includes the overview build, so that is taken out of the answer part."""
    stats = stats_from_trace(trace)
    answer = max(0.0, float(stats["seconds"]) - overviews)
    stats["parts"] = {"load": round(load, 2), "overviews": round(overviews, 2),
                      "answer": round(answer, 2)}
    stats["seconds"] = round(max(waited, load + overviews + answer), 2)
    return stats


def waited_text(stats: dict) -> str:
    """'5.2 s (model load 3.1 s, overviews 1.0 s, answer 0.9 s)'; just '1.0 s' when the answer
    was all of the wait (and for turns saved before the parts were kept)."""
    seconds = stats.get("seconds")
    if not isinstance(seconds, (int, float)):
        return "? s"
    parts = stats.get("parts") or {}
    extra = [(name, float(parts.get(name) or 0.0)) for name in ("load", "overviews")]
    extra = [(name, value) for name, value in extra if value >= SHOWN_PART_S]
    if not extra:
        return f"{seconds:.1f} s"
    shown = extra + [("answer", float(parts.get("answer") or 0.0))]
    return f"{seconds:.1f} s ({', '.join(f'{PART_LABELS[n]} {v:.1f} s' for n, v in shown)})"


class Conversations:
    """Turns per layer id. Follow-ups send the answered turns of the same layer as history."""

    def __init__(self) -> None:
        self.by_layer: Dict[str, List[Turn]] = {}

    def turns(self, layer_id: str) -> List[Turn]:
        return self.by_layer.setdefault(layer_id, [])

    def history(self, layer_id: str) -> List[List[str]]:
        return [[t.question, t.text] for t in self.turns(layer_id) if t.status == "answered"]

    def find(self, request_id: str) -> Optional[Turn]:
        for turns in self.by_layer.values():
            for turn in turns:
                if turn.request_id == request_id:
                    return turn
        return None

    def clear(self, layer_id: str) -> None:
        self.by_layer.pop(layer_id, None)

    def to_json(self) -> str:
        return json.dumps({layer: [asdict(t) for t in turns if t.finished]
                           for layer, turns in self.by_layer.items()})

    @classmethod
    def from_json(cls, text: str) -> "Conversations":
        conversations = cls()
        if not text:
            return conversations
        try:
            data = json.loads(text)
        except ValueError:
            return conversations   # a damaged entry must not stop the project from opening
        known = set(Turn.__dataclass_fields__)
        for layer, turns in (data or {}).items():
            conversations.by_layer[layer] = [Turn(**{k: v for k, v in t.items() if k in known})
                                             for t in turns]
        return conversations

    def save_to_project(self, project) -> None:
        project.writeEntry(PROJECT_SCOPE, PROJECT_KEY, self.to_json())

    @classmethod
    def load_from_project(cls, project) -> "Conversations":
        text, _ok = project.readEntry(PROJECT_SCOPE, PROJECT_KEY, "")
        return cls.from_json(text)


CSV_FIELDS = ("layer", "question", "answer", "status", "seconds", "load_seconds", "overview_seconds",
              "answer_seconds", "tiles", "llm_tokens", "levels", "heatmap")


def export_csv(rows: List[tuple]) -> str:
    """rows: (layer name, Turn). One line per turn; text cells never run as spreadsheet formulas."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    for layer_name, turn in rows:
        stats = turn.stats or {}
        parts = stats.get("parts") or {}
        answer = turn.text if turn.status == "answered" else ""
        writer.writerow(spreadsheet_safe_row([
            layer_name, turn.question, answer, turn.status, stats.get("seconds", ""),
            parts.get("load", ""), parts.get("overviews", ""), parts.get("answer", ""),
            stats.get("tiles", ""), stats.get("llm_tokens", ""),
            " ".join(str(v) for v in stats.get("levels", []) or []), turn.heat_path]))
    return out.getvalue()


def export_markdown(rows: List[tuple], title: str = "RS-VQA conversation") -> str:
    lines = [f"# {title}", ""]
    current = None
    for layer_name, turn in rows:
        if layer_name != current:
            lines += [f"## {layer_name}", ""]
            current = layer_name
        lines.append(f"**Q:** {turn.question}  ")
        answer = turn.text if turn.status == "answered" else f"_{turn.status}: {turn.message}_"
        lines.append(f"**A:** {answer}")
        stats = turn.stats or {}
        if stats:
            levels = ", ".join(str(v) for v in stats.get("levels", []) or [])
            lines.append(f"<sub>{waited_text(stats)}, {stats.get('tiles', '?')} tiles read, "
                         f"{stats.get('llm_tokens', '?')} LLM tokens, levels {levels}</sub>")
        lines.append("")
    return "\n".join(lines)
