"""Distillation samples: LRS-VQA questions turned into the engine's thumbnail + level-1 sequences,
with the teacher's attention rows (the LLM's own eager attention from the query token).

The sequence is built exactly as the engine's first pass (engine.pipeline): pyramid plan, GDAL
reads, vision.onnx, the bundle's separator/newline, engine.sequence.assemble."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ..engine.errors import InputError


@dataclass(frozen=True)
class Question:
    question_id: str
    image: Path
    text: str


@dataclass
class Sample:
    question_id: str
    embeds: np.ndarray        # float32 [L, D]
    hr_mask: np.ndarray       # bool [L]
    query_index: int
    teacher: np.ndarray       # float32 [P, H, L] attention probabilities at the distilled layers
    positions: Optional[np.ndarray] = None   # int64 [3, L] M-RoPE positions (mrope bundles)

    def save(self, path) -> None:
        extra = {} if self.positions is None else {"positions": self.positions}
        np.savez(path, embeds=self.embeds, hr_mask=self.hr_mask, teacher=self.teacher,
                 query_index=np.int64(self.query_index), question_id=np.str_(self.question_id),
                 **extra)

    @classmethod
    def load(cls, path) -> "Sample":
        with np.load(path, allow_pickle=False) as data:
            return cls(question_id=str(data["question_id"]), embeds=data["embeds"],
                       hr_mask=data["hr_mask"], query_index=int(data["query_index"]),
                       teacher=data["teacher"],
                       positions=data["positions"] if "positions" in data.files else None)


def read_questions(jsonl, images_dir=None) -> List[Question]:
    """LRS-VQA jsonl (question_id, image, text, ...); image paths are relative to images_dir, else
    to the jsonl's folder."""
    path = Path(jsonl).expanduser()
    if not path.is_file():
        raise InputError(f"{path} does not exist: give an LRS-VQA style .jsonl file.")
    base = Path(images_dir).expanduser() if images_dir else path.parent
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            qid, image, text = str(item["question_id"]), str(item["image"]), str(item["text"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}:{number} is not an LRS-VQA question (needs question_id, "
                             f"image, text): {exc}") from exc
        image_path = Path(image) if Path(image).is_absolute() else base / image
        if not image_path.is_file():
            raise InputError(f"{path}:{number}: image {image_path} does not exist; pass the "
                             "folder the image paths are relative to with --images DIR.")
        questions.append(Question(qid, image_path, text))
    if not questions:
        raise InputError(f"{path} holds no questions.")
    return questions


def split_heldout(questions: Sequence[Question], fraction: float) -> tuple:
    """(train, held_out): every k-th question is held out (deterministic, k = round(1/fraction));
    at least one on each side."""
    if len(questions) < 2:
        raise InputError("Distillation needs at least 2 questions (one is held out to measure it).")
    k = max(2, int(round(1.0 / max(min(fraction, 0.5), 1e-6))))
    held = [q for i, q in enumerate(questions) if i % k == k - 1] or [questions[-1]]
    train = [q for q in questions if q not in held]
    return train, held


class _Enough(Exception):
    """Raised by the attention hook once the deepest needed layer has run (skips the rest)."""


class SampleBuilder:
    """Builds Samples with the bundle's vision encoder and LLM (a LanguageModel, switched to eager
    attention so that the attention weights exist)."""

    def __init__(self, bundle, vision, llm, teacher_layers: Sequence[int],
                 overview_cache_dir=None, cancel=None):
        self.bundle, self.vision, self.llm = bundle, vision, llm
        self.layers = [int(l) for l in teacher_layers]
        self.overview_cache_dir = overview_cache_dir
        self.cancel = cancel
        llm.model.set_attn_implementation("eager")

    def sequence(self, question: Question, level: int = 1, window: int = 0):
        """The engine's first-pass sequence: thumbnail + all level-1 tiles + the question.
        level > 1 with window = n: the centred n x n tiles of that level instead (a dip-like
        deeper sequence, used to measure the loss at realistic HR token counts)."""
        from ..engine.pyramid import level_valid_token_shape, plan_pyramid
        from ..engine.raster import RasterSource
        from ..engine.reader import PyramidReader
        from ..engine.sequence import assemble, level_tokens

        m = self.bundle.manifest
        prefix_ids, suffix_ids = self.llm.prompt_segments(question.text)
        with RasterSource(question.image, overview_cache_dir=self.overview_cache_dir,
                          cancel=self.cancel) as source:
            plan = plan_pyramid(source.width, source.height, tile_size=m.tile_size,
                                token_grid=m.pooled_grid, **m.plan_options())
            reader = PyramidReader(source, plan)
            thumb_pixels, thumb_valid = reader.read_thumbnail()
            thumb = self.vision.encode_thumbnail(thumb_pixels, thumb_valid).reshape(-1, m.hidden_size)
            tiles = _window(plan.level(level), window)
            pixels, valid = reader.read_tiles(level, tiles, cancel=self.cancel)
        features = self.vision.encode_tiles(pixels, valid)
        tokens = level_tokens(plan, level, tiles, features, level_valid_token_shape(plan, level))
        return assemble(self.llm.embed_ids(prefix_ids), thumb, self.bundle.separator,
                        self.bundle.newline_embedding, tokens, self.llm.embed_ids(suffix_ids),
                        self.bundle.manifest.positions)

    def teacher_rows(self, embeds: np.ndarray, query_index: int,
                     positions: Optional[np.ndarray] = None) -> np.ndarray:
        """Attention probabilities [P, H, L] of the query token at self.layers (eager attention
        weights of the LLM itself; the forward stops after the deepest of these layers).
        positions: M-RoPE positions [3, L] for bundles that use them."""
        import torch

        model = self.llm.model
        decoder = model.get_decoder()
        rows = {}
        deepest = max(self.layers)

        def hook(index):
            def capture(_module, _inputs, output):
                weights = output[1]
                if weights is None:
                    raise RuntimeError("the LLM returned no attention weights (not eager?)")
                rows[index] = weights[0, :, query_index, :].float().cpu()
                if index == deepest:
                    raise _Enough()
            return capture

        handles = [decoder.layers[i].self_attn.register_forward_hook(hook(i)) for i in self.layers]
        try:
            x = torch.from_numpy(np.ascontiguousarray(embeds))[None].to(self.llm.device,
                                                                        self.llm.dtype)
            extra = {}
            if positions is not None:
                extra["position_ids"] = torch.from_numpy(np.asarray(positions, np.int64))[
                    :, None].to(self.llm.device)
            with torch.no_grad():
                model(inputs_embeds=x, use_cache=False, **extra)
        except _Enough:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return torch.stack([rows[i] for i in self.layers]).numpy().astype(np.float32)

    def build(self, question: Question) -> "Sample":
        seq = self.sequence(question)
        teacher = self.teacher_rows(seq.embeds, seq.query_index, seq.positions)
        return Sample(question.question_id, seq.embeds.astype(np.float32), seq.hr_mask,
                      int(seq.query_index), teacher, seq.positions)


def _window(level, size: int):
    """All tiles of the level (size 0), else its centred size x size tiles."""
    if size <= 0:
        return level.tiles()
    if size > min(level.rows, level.cols):
        raise InputError(f"pyramid level {level.index} has {level.rows} x {level.cols} tiles: "
                         f"no {size} x {size} window; choose a deeper level or a smaller window.")
    r0, c0 = (level.rows - size) // 2, (level.cols - size) // 2
    return [(r, c) for r in range(r0, r0 + size) for c in range(c0, c0 + size)]


def sample_name(question: Question, layers: Sequence[int]) -> str:
    """Cache file name: changes whenever the question, its image or the distilled layers do."""
    key = json.dumps([question.question_id, str(question.image), question.text, list(layers)])
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16] + ".npz"


def prepare_samples(builder, questions: Sequence[Question], cache_dir: Path,
                    progress=None) -> List[Path]:
    """Build (or reuse from cache_dir) one .npz per question; returns their paths in order.
    `builder` has .build(question), .layers and .cancel (a SampleBuilder or a lazy stand-in)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, question in enumerate(questions):
        if builder.cancel is not None:
            builder.cancel.raise_if_cancelled()
        path = cache_dir / sample_name(question, builder.layers)
        if not path.is_file():
            tmp = path.with_name(path.stem + ".partial.npz")
            builder.build(question).save(tmp)
            tmp.replace(path)
        paths.append(path)
        if progress is not None:
            progress((i + 1) / len(questions), f"prepared {i + 1}/{len(questions)}: "
                                               f"{question.question_id}")
    return paths


def teacher_layers(rfm_layers: Sequence[int], pairs: str) -> List[int]:
    """The LLM layers distilled: 'first_last' (the paper: l1 and lR) or 'all'."""
    layers = [int(l) for l in rfm_layers]
    if pairs == "all":
        return layers
    if pairs == "first_last":
        return sorted({layers[0], layers[-1]})
    raise InputError(f"Unknown layer pairs {pairs!r}: choose first_last or all.")

