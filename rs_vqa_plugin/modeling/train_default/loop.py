"""The training loop: seeded batches, stages by step, time budget fixed into a step count once,
checkpoints (last + best on val), resume, and a JSON-lines loss log."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .dataset import KINDS

# Steps timed before the time budget is turned into a fixed step count (learning-rate warm-up
# only depends on the step, so these steps are the same whatever the count becomes).
TIMING_STEPS = 15
REPLAN_SECONDS = 240
VAL_NEW_TOKENS = 6          # greedy answer length in validation (answers are 1-3 tokens + end)


def _kind_pools(cache) -> dict:
    pools = {"level1": np.flatnonzero(cache.kind == KINDS["level1"]),
             "zoom": np.flatnonzero((cache.kind == KINDS["zoom"]) | (cache.kind == KINDS["zoom-pruned"])),
             "thumbnail": np.flatnonzero(cache.kind == KINDS["thumbnail"]),
             "search": np.flatnonzero(cache.kind == KINDS["search"])}
    return {k: v for k, v in pools.items() if v.size}


def batch_indices(cache, pools: dict, views, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The samples of one step: a function of (seed, step) only, so a resumed run draws the same.
    One view kind per step (the stage's kinds in turn): similar lengths, little padding."""
    rng = np.random.default_rng([int(seed), 7919, int(step)])
    kinds = [k for k in views if k in pools] or list(pools)
    pool = pools[kinds[step % len(kinds)]]
    return rng.choice(pool, size=batch_size, replace=pool.size < batch_size)


def stage_at(recipe, step: int, total: int):
    edge = 0.0
    for stage in recipe.stages:
        edge += stage.fraction
        if step < edge * total:
            return stage
    return recipe.stages[-1]


# A continued run (Trainer.extend) restarts the cosine over its new steps at this share of the
# stage's rate: the old schedule ended near 10% of it, too low to learn the new views.
RESTART_SCALE = 0.5


def learning_rate(recipe, stage, step: int, total: int, phase_start: int = 0) -> float:
    span, at = max(1, total - phase_start), step - phase_start
    warm = min(1.0, (at + 1) / max(1, recipe.warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, at / span)))
    scale = RESTART_SCALE if phase_start else 1.0
    return stage.lr * scale * warm * (0.1 + 0.9 * cosine)


class KeepsBest:
    """Checkpoints, validation and best-on-val of a training loop. Subclasses set the names and
    have step, best, recipe, log, save(name) and validate()."""

    LAST, BEST, VAL_EVENT, SCORE = "last.pt", "best.pt", "val", "em"

    def _housekeeping(self, now: float, last_ckpt: float, last_val: float):
        """Checkpoint and validate when due; returns the new (last_ckpt, last_val) times."""
        r = self.recipe
        if now - last_ckpt >= r.checkpoint_minutes * 60:
            self.save(self.LAST)
            last_ckpt = now
        if r.val_every_minutes > 0 and now - last_val >= r.val_every_minutes * 60:
            self._validate_and_keep()
            last_val = time.perf_counter()
        return last_ckpt, last_val

    def _finish(self) -> dict:
        self.save(self.LAST)
        return self._validate_and_keep()

    def _validate_and_keep(self) -> dict:
        result = self.validate()
        result.update({"event": self.VAL_EVENT, "step": self.step})
        self.log(result)
        if result[self.SCORE] >= self.best:
            self.best = result[self.SCORE]
            self.save(self.BEST)
        return result


class Trainer(KeepsBest):
    def __init__(self, model, recipe, train_cache, val_cache, prompt_text, out_dir: Path,
                 log=print):
        self.model, self.recipe = model, recipe
        self.train_cache, self.val_cache = train_cache, val_cache
        self.text = prompt_text
        self.out = Path(out_dir)
        self.ckpt = self.out / "checkpoints"
        self.ckpt.mkdir(parents=True, exist_ok=True)
        self.log = log
        params = [p for p in model.parameters() if p.requires_grad]
        # A probe (recipe.dense_probe) must not change the model's training: its heads stay out
        # of the gradient norm that clipping scales the model's gradients by.
        self.clipped = [p for name, p in model.named_parameters() if p.requires_grad and not (
            getattr(recipe, "dense_probe", False) and name.startswith("dense_heads."))]
        self.optimizer = torch.optim.AdamW(params, lr=recipe.stages[0].lr,
                                           weight_decay=recipe.weight_decay)
        self.step = 0
        self.total: Optional[int] = recipe.max_steps or None
        self.seconds = 0.0              # training seconds, summed over resumed runs
        self.best = -1.0
        self.phase_start = 0            # the step a continued run (extend) started from
        self.pools = _kind_pools(train_cache)

    # ------------------------------------------------------------ checkpoints
    def save(self, name: str) -> Path:
        path = self.ckpt / name
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "step": self.step, "total": self.total, "seconds": self.seconds,
                    "best": self.best, "phase_start": self.phase_start}, tmp)
        tmp.replace(path)
        return path

    def resume(self) -> bool:
        path = self.ckpt / self.LAST
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.total = int(state["step"]), state["total"]
        self.seconds, self.best = float(state["seconds"]), float(state["best"])
        self.phase_start = int(state.get("phase_start", 0))
        self.log({"event": "resumed", "step": self.step, "total": self.total})
        return True

    def extend(self, more_seconds: float) -> None:
        """Continue a finished run for about `more_seconds` more: the step count is estimated from
        the run's own speed so far (re-planned after a few steps), the best-on-val restarts."""
        per_step = self.seconds / max(1, self.step)
        self.total = self.step + max(1, int(more_seconds / per_step))
        self.best = -1.0
        self.phase_start = self.step
        self.log({"event": "extend", "step": self.step, "total_steps": self.total,
                  "seconds": round(more_seconds)})

    # ------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict:
        """On the val views: answer exact match (teacher-forced argmax over the whole answer) by
        view kind and by question category, the share of greedy answers of the asked kind, RFM
        box hits, and the dense heads' accuracy on the val images. Selection uses `em`."""
        from ...benchmark.answer_kinds import KINDS as ANSWER_KINDS, is_of_kind
        from .model import collate

        cache = self.val_cache
        self.model.eval()
        n = min(len(cache), self.recipe.val_questions * 3)
        idx = np.linspace(0, len(cache) - 1, n).astype(int) if n else np.zeros(0, int)
        hits = {k: [] for k in KINDS}
        by_category = {k: [] for k in ANSWER_KINDS}
        of_kind = {k: [] for k in ANSWER_KINDS}
        box_hits = []
        names = {v: k for k, v in KINDS.items()}
        for start in range(0, len(idx), self.recipe.batch_size):
            batch = collate(cache, idx[start:start + self.recipe.batch_size], self.text)
            embeds = self.model.embed_batch(batch)
            out = self.model.lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"])
            pred = self.model.head(out.last_hidden_state[:, :-1]).argmax(-1)
            labels = batch["labels"][:, 1:]
            for b in range(len(batch["kind"])):
                where = labels[b] != -100
                right = bool((pred[b][where] == labels[b][where]).all())
                hits[names[batch["kind"][b]]].append(right)
                q = int(batch["query"][b])
                category = int(batch["category"][b])
                if category >= 0:
                    by_category[ANSWER_KINDS[category]].append(right)
                    ids = self.model.greedy_answer(embeds[b, :q + 1], self.text.end_id,
                                                   VAL_NEW_TOKENS)
                    answer = self.text.tokenizer.decode(ids, skip_special_tokens=True)
                    of_kind[ANSWER_KINDS[category]].append(
                        bool(is_of_kind(ANSWER_KINDS[category], answer)))
                box = batch["box"][b]
                if bool(box.any()):
                    scores = self.model.rfm.scores(embeds[b, :q + 1], batch["hr"][b, :q + 1],
                                                   torch.tensor(q))
                    hr_scores = scores[batch["hr"][b, :q + 1]]
                    k = max(1, int(math.ceil(self.recipe.alpha * hr_scores.numel())))
                    top = torch.topk(hr_scores, k).indices
                    box_hits.append(bool(box[:q + 1][batch["hr"][b, :q + 1]][top].any()))
        result = {f"em_{k}": (float(np.mean(v)) if v else None) for k, v in hits.items()}
        every = [x for v in hits.values() for x in v]
        result["em"] = float(np.mean(every)) if every else 0.0
        result["rfm_box_hit"] = float(np.mean(box_hits)) if box_hits else None
        result["em_by_category"] = {k: float(np.mean(v)) for k, v in by_category.items() if v}
        result["kind_by_category"] = {k: float(np.mean(v)) for k, v in of_kind.items() if v}
        kinds = [x for v in of_kind.values() for x in v]
        result["kind_rate"] = float(np.mean(kinds)) if kinds else None
        if self.model.dense_heads is not None and cache.has_dense:
            result["dense"] = dense_accuracy(self.model, cache)
        self.model.train()
        return result

    # ------------------------------------------------------------ loop
    def run(self, budget_seconds: float, events=None, cancel=None) -> dict:
        from .model import collate

        r = self.recipe
        torch.manual_seed(r.seed + self.step)
        self.model.train()
        started = time.perf_counter()
        last_ckpt = last_val = started
        timing_start, timing_steps = None, self.step
        while self.total is None or self.step < self.total:
            if cancel is not None:
                cancel.raise_if_cancelled()
            step_start = time.perf_counter()
            stage = stage_at(r, self.step, self.total or 10 ** 9)
            lr = learning_rate(r, stage, self.step, self.total or 10 ** 9, self.phase_start)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            batch = collate(self.train_cache, batch_indices(self.train_cache, self.pools,
                                                            stage.views, r.batch_size, r.seed,
                                                            self.step), self.text)
            batch["step"] = self.step
            parts = self.model(batch)
            self.optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            torch.nn.utils.clip_grad_norm_(self.clipped, r.grad_clip)
            self.optimizer.step()
            self.step += 1
            now = time.perf_counter()
            self.seconds += now - step_start
            if not r.max_steps and (self.total is None or timing_start is None
                                   or now - timing_start >= REPLAN_SECONDS):
                # The time budget becomes a step count once the speed is known, and is re-planned
                # every few minutes from the recent speed (the machine may be shared). The plans
                # are logged; a run given --max-steps instead is exactly reproducible.
                if timing_start is None or (self.total is None and self.step <= 2):
                    timing_start, timing_steps = now, self.step
                elif self.step - timing_steps >= TIMING_STEPS:
                    per_step = (now - timing_start) / (self.step - timing_steps)
                    left = budget_seconds - (now - started)
                    self.total = max(self.step + 1, self.step + int(left / per_step))
                    self.log({"event": "schedule", "seconds_per_step": round(per_step, 3),
                              "total_steps": self.total})
                    timing_start, timing_steps = now, self.step
            if budget_seconds > 0 and now - started > 1.25 * budget_seconds:
                # A much slower machine than the timed steps promised: stop rather than overrun.
                self.log({"event": "budget-exceeded", "step": self.step, "total": self.total})
                self.total = self.step
            if self.step % r.log_every == 0 or self.step == 1:
                self.log({"step": self.step, "total": self.total, "stage": stage.name,
                          "lr": round(lr, 6), **{k: round(float(v.detach()), 4) for k, v in parts.items()},
                          "seconds": round(self.seconds, 1)})
            last_ckpt, last_val = self._housekeeping(now, last_ckpt, last_val)
        return self._finish()


@torch.no_grad()
def dense_accuracy(model, cache, chunk: int = 256) -> dict:
    """Accuracy of each dense head on every image of `cache` (thumbnails: patch tokens; tiles:
    pooled tokens): `category` on cells with an object (right category), `none` on empty cells,
    the attributes on object cells, `landcover` on every labelled cell; `*_finest` on the tiles
    of the finest level only (objects at full resolution: what dip reads at the end)."""
    from .dense import HEADS

    counts = {}

    def add(key, ok):
        c = counts.setdefault(key, [0, 0])
        c[0] += int(ok.sum())
        c[1] += int(ok.numel())

    n = cache.images.shape[0]
    for start in range(0, n, chunk):
        ids = np.arange(start, min(n, start + chunk))
        images = torch.from_numpy(np.ascontiguousarray(cache.images[ids]))
        tokens, pooled = model.encode(images)
        for local, i in enumerate(ids):
            thumb = int(cache.image_level[i]) == 0
            x = (tokens if thumb else pooled)[local]
            y = torch.from_numpy(cache.image_targets(int(i)).astype(np.int64))
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"image {i}: {x.shape[0]} tokens but {y.shape[0]} dense labels; "
                                 "the view cache was built for another patch size (rebuild it)")
            logits = model.dense_heads(x)
            finest = bool(cache.image_finest[i])
            obj = y[:, 0] > 0
            for h, name in enumerate(HEADS):
                pred = logits[name].argmax(-1)
                if name == "category":
                    add("category", (pred == y[:, 0])[obj])
                    add("none", (pred == 0)[y[:, 0] == 0])
                    if finest:
                        add("category_finest", (pred == y[:, 0])[obj])
                    continue
                valid = y[:, h] >= 0
                add(name, (pred == y[:, h])[valid])
                if finest and name != "landcover":
                    add(f"{name}_finest", (pred == y[:, h])[valid])
    return {k: (round(c[0] / c[1], 4) if c[1] else None) for k, c in counts.items()} | {
        "object_cells": counts.get("category", [0, 0])[1]}
