"""The focus stage of train-default: the RFM alone, trained to find the asked object on the views
`dip` builds, after the joint training.

Measured on val (models/default/README.md), the jointly trained RFM put the asked object's token in
its top 10 of level 1's 144 only 41% of the time, and it is seen in training only on the paper's
level-1 view and on small windows around the object. Here the vision tower, the LLM and its head
are frozen (the answers do not change) and the RFM learns, on 'level1' views and on 'search' views
(the object's tiles among other clusters, at every deeper level, as many tiles as a focus step
reads), to put its score on the object's tokens: cross-entropy to the soft box target of the
joint training (exp(-gap / sigma) over the HR tokens). Resumable: its own checkpoints and log
records, its best on val by the share of views whose object is in the RFM's top tokens."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from .dataset import KINDS
from .loop import KeepsBest
from .model import collate, soft_box_target

FOCUS_KINDS = ("level1", "search", "search", "search")
XY_LR_SCALE = 20.0
# What 'found' means in validation: a token touching the box among the top FOUND_TOP (the
# number a focus step with a 32-tile budget keeps at level 1 is about 20-30).
FOUND_TOP = (3, 10)


def focus_parameters(model) -> List[torch.nn.Parameter]:
    """Freeze everything but the RFM; its parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.rfm.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def focus_loss(model, batch: dict):
    """(loss, found@k lists): the RFM's soft-box cross-entropy over the batch's boxed views."""
    with torch.no_grad():
        embeds = model.embed_batch(batch)
    terms, found = [], {k: [] for k in FOUND_TOP}
    for b in range(embeds.shape[0]):
        q = int(batch["query"][b])
        hr = batch["hr"][b, :q + 1]
        target = soft_box_target(batch["dist"][b, :q + 1][hr], model.recipe.ground_sigma)
        if target is None:
            continue
        xy = batch["xy"][b, :q + 1] if model.rfm.image_xy is not None else None
        logits = model.rfm.forward_attention_rows(embeds[b, :q + 1], q, image_xy=xy,
                                                  hr_mask=batch["hr"][b, :q + 1])[
            model.rfm.config.layers[-1]]
        score = torch.softmax(logits[:, hr].float(), dim=-1).mean(0)
        terms.append(-(target * torch.log(score.clamp_min(1e-9))).sum())
        inside = batch["box"][b, :q + 1][hr]
        ranked = torch.argsort(score.detach(), descending=True)
        for k in FOUND_TOP:
            found[k].append(bool(inside[ranked[:k]].any()))
    loss = torch.stack(terms).mean() if terms else embeds.new_zeros(())
    return loss, found


def _pools(cache) -> Dict[str, np.ndarray]:
    boxed = np.array([bool(cache.box[cache.code_offsets[i]:cache.code_offsets[i + 1]].any())
                      for i in range(len(cache))])
    return {name: np.flatnonzero((cache.kind == KINDS[name]) & boxed)
            for name in ("level1", "search")}


class FocusTrainer(KeepsBest):
    LAST, BEST, VAL_EVENT, SCORE = "focus_last.pt", "focus_best.pt", "focus-val", "focus_score"

    def __init__(self, model, recipe, train_cache, val_cache, text, out_dir: Path, log=print):
        self.model, self.recipe, self.text, self.log = model, recipe, text, log
        self.train_cache, self.val_cache = train_cache, val_cache
        self.ckpt = Path(out_dir) / "checkpoints"
        self.ckpt.mkdir(parents=True, exist_ok=True)
        # the image-position input (zero-initialised) joins the RFM before its parameters are taken
        model.rfm.add_image_xy(int(getattr(recipe, "focus_xy", 0)))
        self.params = focus_parameters(model)
        # The position projection starts at zero and must grow to the scale of the vision tokens
        # (norm ~30): its own, larger learning rate.
        xy = [p for n, p in model.rfm.named_parameters() if n.startswith("image_xy.")]
        rest = [p for n, p in model.rfm.named_parameters() if not n.startswith("image_xy.")]
        groups = [{"params": rest, "scale": 1.0}]
        if xy:
            groups.append({"params": xy, "scale": XY_LR_SCALE, "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=recipe.focus_lr, weight_decay=0.01)
        self.step, self.total, self.seconds, self.best = 0, None, 0.0, -1.0
        self.pools = _pools(train_cache)
        self.val_pools = _pools(val_cache)

    def save(self, name: str) -> None:
        path = self.ckpt / name
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"rfm": self.model.rfm.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "step": self.step, "total": self.total, "seconds": self.seconds,
                    "best": self.best}, tmp)
        tmp.replace(path)

    def resume(self) -> bool:
        path = self.ckpt / self.LAST
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.rfm.load_state_dict(state["rfm"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.total = int(state["step"]), state["total"]
        self.seconds, self.best = float(state["seconds"]), float(state["best"])
        self.log({"event": "focus-resumed", "step": self.step, "total": self.total})
        return True

    def load_best(self) -> None:
        path = self.ckpt / self.BEST
        if path.is_file():
            self.model.rfm.load_state_dict(torch.load(path, map_location="cpu",
                                                      weights_only=True)["rfm"])

    def _batch(self, step: int):
        rng = np.random.default_rng([int(self.recipe.seed), 4243, int(step)])
        # level 1 (the coarsest, hardest step) one batch in three
        pool = self.pools["level1"] if step % 3 == 0 and self.pools["level1"].size else \
            self.pools["search"]
        idx = rng.choice(pool, size=self.recipe.batch_size, replace=pool.size < self.recipe.batch_size)
        return collate(self.train_cache, idx, self.text)

    def lr(self) -> float:
        total = max(1, self.total or 1)
        warm = min(1.0, (self.step + 1) / 50)
        return self.recipe.focus_lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, self.step / total))))

    @torch.no_grad()
    def validate(self) -> dict:
        self.model.eval()
        cache = self.val_cache
        pools = self.val_pools
        found = {(name, k): [] for name in pools for k in FOUND_TOP}
        losses = []
        for name, pool in pools.items():
            for start in range(0, pool.size, self.recipe.batch_size):
                batch = collate(cache, pool[start:start + self.recipe.batch_size], self.text)
                loss, hits = focus_loss(self.model, batch)
                losses.append(float(loss))
                for k, v in hits.items():
                    found[(name, k)] += v
        self.model.train()
        result = {f"found{k}_{name}": round(float(np.mean(v)), 4) for (name, k), v in found.items() if v}
        result["focus_loss"] = round(float(np.mean(losses)), 4) if losses else None
        # selection: the mean of level 1's and the search views' found@10
        result["focus_score"] = float(np.mean([result.get(f"found10_{n}", 0.0) for n in pools]))
        return result

    def run(self, budget_seconds: float, cancel=None) -> dict:
        r = self.recipe
        self.model.train()
        started = time.perf_counter()
        last_ckpt = last_val = started
        if self.step == 0:
            self._validate_and_keep()
        while self.total is None or self.step < self.total:
            if cancel is not None:
                cancel.raise_if_cancelled()
            t = time.perf_counter()
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr() * group.get("scale", 1.0)
            loss, hits = focus_loss(self.model, self._batch(self.step))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, r.grad_clip)
            self.optimizer.step()
            self.step += 1
            now = time.perf_counter()
            self.seconds += now - t
            if r.max_steps:
                self.total = r.max_steps
            elif self.step == 20 or (self.step % 200 == 0):
                per_step = self.seconds / self.step
                left = budget_seconds - (now - started)
                self.total = max(self.step + 1, self.step + int(left / per_step))
            if self.step % r.log_every == 0 or self.step == 1:
                self.log({"focus_step": self.step, "total": self.total, "loss": round(float(loss.detach()), 4),
                          "found10": round(float(np.mean(hits[10])), 3) if hits[10] else None,
                          "lr": round(self.lr(), 6), "seconds": round(self.seconds, 1)})
            last_ckpt, last_val = self._housekeeping(now, last_ckpt, last_val)
        return self._finish()
