"""The default model for training: a transformers LLaVA (CLIP tower + projector + Qwen2) built from
the recipe, plus its RFM copied from the chosen LLM layers, and the joint loss of one batch.

Vision runs through export_vision.VisionGraph, the very module the converter exports, so the
trained tower, projector and 2x2 pooling are what vision.onnx computes."""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..distill_loss import DistillLossSettings, distill_loss
from ..export_vision import VisionGraph, vision_spec
from ..llava_parts import CLIP_MEAN, CLIP_STD
from ..rfm_torch import RegionFocusTorch
from .dense import CLASSES as DENSE_CLASSES, HEADS as DENSE_HEADS

IGNORE = -100


def build_llava(recipe, tokenizer):
    """LlavaForConditionalGeneration with random weights from the recipe's sizes and seed."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, Qwen2Config

    torch.manual_seed(recipe.seed)
    vision = CLIPVisionConfig(hidden_size=recipe.vision_hidden,
                              intermediate_size=recipe.vision_hidden * 4,
                              num_hidden_layers=recipe.vision_layers,
                              num_attention_heads=recipe.vision_heads, image_size=recipe.tile_size,
                              patch_size=recipe.patch_size, projection_dim=recipe.vision_hidden)
    text = Qwen2Config(vocab_size=len(tokenizer), hidden_size=recipe.text_hidden,
                       intermediate_size=recipe.text_intermediate,
                       num_hidden_layers=recipe.text_layers, num_attention_heads=recipe.text_heads,
                       num_key_value_heads=recipe.text_kv_heads,
                       max_position_embeddings=recipe.max_positions, tie_word_embeddings=False,
                       eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                       pad_token_id=tokenizer.pad_token_id)
    # Feature layer -1: a tower trained from scratch has no contrastive last layer to skip.
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", image_seq_length=recipe.patch_grid ** 2,
                         tie_word_embeddings=False)
    model = LlavaForConditionalGeneration(config)
    # Eager attention: the teacher's attention rows are needed for distillation.
    model.set_attn_implementation("eager")
    return model


class DenseHeads(nn.Module):
    """One linear head per dense label (dense.HEADS) on the projected vision tokens, i.e. on what
    the LLM reads: the labels must be linearly there. Training only: not part of the LLaVA that
    is exported."""

    def __init__(self, width: int):
        super().__init__()
        self.heads = nn.ModuleDict({name.replace(" ", "_"): nn.Linear(width, len(DENSE_CLASSES[name]))
                                    for name in DENSE_HEADS})

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {name: self.heads[name.replace(" ", "_")](x) for name in DENSE_HEADS}


class DefaultModel(nn.Module):
    """LLaVA + RFM trained jointly: LM loss on answer tokens + the paper's distillation loss +
    box grounding of the teacher's and the RFM's query attention (our addition, see recipe) +
    dense labels of the vision tokens and the answer-kind loss (training only, see recipe)."""

    def __init__(self, llava, recipe, rfm: RegionFocusTorch = None):
        super().__init__()
        self.llava = llava
        self.recipe = recipe
        inner = llava.model
        self.spec = vision_spec(llava.config, recipe.text_hidden)
        self.vision = VisionGraph(inner.vision_tower, inner.multi_modal_projector, self.spec)
        self.lm = inner.language_model
        self.head = llava.lm_head
        self.rfm = rfm if rfm is not None else RegionFocusTorch.from_llm(
            _CausalView(self.lm, llava.config.text_config), recipe.rfm_layers)
        self.rfm.train()
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.settings = DistillLossSettings(mse_form=recipe.distill_mse_form)
        self.dense_heads = DenseHeads(recipe.text_hidden) if recipe.uses_dense_heads else None
        none_weight = torch.ones(len(DENSE_CLASSES["category"]))
        none_weight[0] = float(getattr(recipe, "dense_none_weight", 1.0))
        self.register_buffer("none_weight", none_weight, persistent=False)
        # [answer kinds, vocab] first tokens of each category's answers (set_answer_kinds)
        self.register_buffer("kind_first", torch.zeros(0, 0, dtype=torch.bool), persistent=False)

    def set_answer_kinds(self, first_tokens) -> None:
        """bool [len(answer_kinds.KINDS), vocab]: the tokens that may start an answer of each kind."""
        self.kind_first = torch.as_tensor(np.asarray(first_tokens), dtype=torch.bool)

    def encode(self, images: torch.Tensor):
        """uint8 [N, B, B, 3] -> (tokens [N, G*G, D], pooled [N, g*g, D]) as vision.onnx."""
        x = (images.permute(0, 3, 1, 2).float() - self.mean) / self.std
        return self.vision(x)

    def embed_batch(self, batch: dict, encoded=None) -> torch.Tensor:
        tokens, pooled = encoded if encoded is not None else self.encode(batch["images"])
        d = tokens.shape[-1]
        tables = []
        for thumb, tiles in zip(batch["thumb"], batch["tiles"]):
            tables.append(torch.cat([tokens[thumb], pooled[tiles].reshape(-1, d)], dim=0))
        offsets = torch.tensor([0] + [t.shape[0] for t in tables[:-1]]).cumsum(0)
        table = torch.cat(tables, dim=0)
        codes = batch["codes"]                                   # [Bt, L] (answer ids as text)
        is_vision = codes >= 0
        ids = torch.where(is_vision, torch.full_like(codes, batch["pad_id"]), -1 - codes)
        ids = torch.where(batch["attention_mask"].bool(), ids, torch.full_like(ids, batch["pad_id"]))
        text = self.lm.embed_tokens(ids)
        index = (codes + offsets[:, None]).clamp(min=0)
        vision = table[index.clamp(max=table.shape[0] - 1)]
        return torch.where(is_vision[..., None], vision, text)

    def forward(self, batch: dict) -> Dict[str, torch.Tensor]:
        r = self.recipe
        encoded = self.encode(batch["images"])
        embeds = self.embed_batch(batch, encoded)
        out = self.lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                      output_attentions=True)
        hidden = out.last_hidden_state
        labels = batch["labels"]
        where = labels[:, 1:] != IGNORE
        logits = self.head(hidden[:, :-1][where])
        lm_loss = F.cross_entropy(logits.float(), labels[:, 1:][where])
        with torch.no_grad():
            correct = (logits.argmax(-1) == labels[:, 1:][where]).float().mean()
        parts = {"lm": lm_loss, "token_acc": correct}
        attentions = out.attentions
        layers = [int(l) for l in r.rfm_layers]
        distill_terms, ground_terms, rfm_box_terms = [], [], []
        for b in range(embeds.shape[0]):
            q = int(batch["query"][b])
            hr = batch["hr"][b, :q + 1]
            box = batch["box"][b, :q + 1]
            target = self._ground_target(batch, b, q, hr)
            teacher = torch.stack([attentions[l][b, :, q, :q + 1] for l in layers])   # [P, H, L]
            rows = self.rfm.forward_attention_rows(embeds[b, :q + 1].detach(), q)
            student = torch.stack([rows[l] for l in layers])
            if bool(hr.any()):
                total, _ = distill_loss(teacher.detach(), student, hr, self.settings)
                distill_terms.append(total)
            if bool(box.any()):
                # Teacher grounding: the deepest paired LLM layer's query row, head mean.
                probs = teacher[-1].mean(0)
                teacher_hr = probs[hr] / probs[hr].sum().clamp_min(1e-9)
                # The RFM's own score (what rfm.onnx returns): per-head softmax over HR, head mean.
                score = torch.softmax(student[-1][:, hr].float(), dim=-1).mean(0)
                if target is None:
                    inside = box[hr]
                    ground_terms.append(-torch.log(teacher_hr[inside].sum().clamp_min(1e-6)))
                    rfm_box_terms.append(-torch.log(score[inside].sum().clamp_min(1e-6)))
                else:
                    ground_terms.append(-(target * torch.log(teacher_hr.clamp_min(1e-9))).sum())
                    rfm_box_terms.append(-(target * torch.log(score.clamp_min(1e-9))).sum())
        zero = lm_loss.new_zeros(())
        parts["distill"] = torch.stack(distill_terms).mean() if distill_terms else zero
        parts["ground"] = torch.stack(ground_terms).mean() if ground_terms else zero
        parts["rfm_box"] = torch.stack(rfm_box_terms).mean() if rfm_box_terms else zero
        parts["loss"] = (lm_loss + r.lambda_distill * parts["distill"]
                         + r.lambda_ground * parts["ground"] + r.lambda_rfm_box * parts["rfm_box"])
        lambda_kind = float(getattr(r, "lambda_kind", 0.0))
        if lambda_kind > 0 and self.kind_first.numel():
            parts["kind"] = self.kind_loss(hidden, batch)
            parts["loss"] = parts["loss"] + lambda_kind * parts["kind"]
        if self.dense_heads is not None and "dense_thumb" in batch:
            dense = self.dense_loss(batch, *encoded)
            parts.update(dense)
            # a probe's loss reaches only its heads (dense_loss detaches the tokens)
            scale = 1.0 if r.dense_probe else r.lambda_dense
            parts["loss"] = parts["loss"] + scale * dense["dense"]
        return parts

    @torch.no_grad()
    def greedy_answer(self, embeds: torch.Tensor, end_id: int, max_new: int) -> List[int]:
        """Token ids of the greedy answer after a prompt's embeddings [L, D] (as the engine
        decodes), without the end token."""
        import inspect

        # transformers 5.x renamed past_key_values to cache (as engine.llm, accept either)
        name = "cache" if "cache" in inspect.signature(self.lm.forward).parameters \
            else "past_key_values"
        out = self.lm(inputs_embeds=embeds[None], use_cache=True)
        ids: List[int] = []
        for _ in range(max_new):
            token = int(self.head(out.last_hidden_state[0, -1]).argmax(-1))
            if token == end_id:
                break
            ids.append(token)
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            out = self.lm(inputs_embeds=self.lm.embed_tokens(torch.tensor([[token]])),
                          use_cache=True, **{name: cache})
        return ids

    def first_answer_logits(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        """[Bt, vocab] logits at the query position (the one that predicts the first answer token)."""
        rows = torch.arange(hidden.shape[0])
        return self.head(hidden[rows, batch["query"]]).float()

    def kind_loss(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        """-log of the first answer token's probability mass on the asked kind's first tokens."""
        category = batch["category"]
        known = category >= 0
        if not bool(known.any()):
            return hidden.new_zeros(())
        logits = self.first_answer_logits(hidden, batch)[known]
        allowed = self.kind_first[category[known]]
        inside = torch.logsumexp(logits.masked_fill(~allowed, float("-inf")), dim=-1)
        return (torch.logsumexp(logits, dim=-1) - inside).mean()

    def dense_features(self, batch: dict, tokens: torch.Tensor, pooled: torch.Tensor):
        """(features [M, D], targets [M, heads]): the thumbnails' patch tokens and the tiles'
        pooled tokens of the batch's images, with their dense labels."""
        d = tokens.shape[-1]
        feats = [tokens[batch["dense_thumb_images"]].reshape(-1, d),
                 pooled[batch["dense_tile_images"]].reshape(-1, d)]
        targets = [batch["dense_thumb"].reshape(-1, len(DENSE_HEADS)),
                   batch["dense_tile"].reshape(-1, len(DENSE_HEADS))]
        return torch.cat(feats), torch.cat(targets).long()

    def dense_loss(self, batch: dict, tokens: torch.Tensor, pooled: torch.Tensor) -> Dict[str, torch.Tensor]:
        x, y = self.dense_features(batch, tokens, pooled)
        if self.recipe.dense_probe:
            x = x.detach()
        logits = self.dense_heads(x)
        weights = self.recipe.dense_weights
        total = x.new_zeros(())
        parts = {}
        for h, name in enumerate(DENSE_HEADS):
            t = y[:, h]
            valid = t >= 0
            if not bool(valid.any()):
                parts[f"dense_{name}"] = x.new_zeros(())
                continue
            loss = F.cross_entropy(logits[name][valid].float(), t[valid],
                                   weight=self.none_weight if name == "category" else None)
            parts[f"dense_{name}"] = loss
            total = total + float(weights.get(name, 0.0)) * loss
        parts["dense"] = total
        return parts


    def _ground_target(self, batch: dict, b: int, q: int, hr: torch.Tensor):
        """Soft target over the HR tokens (None: the hard box-mass loss applies)."""
        r = self.recipe
        if getattr(r, "ground_target", "hard") != "soft" or int(batch.get("step", 0)) < int(
                getattr(r, "soft_from_step", 0)):
            return None
        return soft_box_target(batch["dist"][b, :q + 1][hr], r.ground_sigma)


def soft_box_target(gap: torch.Tensor, sigma: float):
    """exp(-gap / sigma) over the HR tokens, normalised (gap: token cells to the asked box, inf
    without one); None when no token is near a box."""
    weight = torch.exp(-gap.float() / float(sigma))
    total = weight.sum()
    return weight / total if float(total) > 0 else None


class _CausalView(nn.Module):
    """What RegionFocusTorch.from_llm reads: `.model` (the decoder) and `.config`."""

    def __init__(self, base, config):
        super().__init__()
        self.model = base
        self.config = config


def collate(cache, indices, prompt_text) -> dict:
    """A padded batch of cached views: the images they use, codes (+ answer ids), labels, masks."""
    samples = [cache.sample(int(i)) for i in indices]
    image_ids: List[int] = []
    position: Dict[int, int] = {}

    def local(i: int) -> int:
        if i not in position:
            position[i] = len(image_ids)
            image_ids.append(i)
        return position[i]

    thumbs, tiles = [], []
    for s in samples:
        thumbs.append(local(s["thumb"]))
        tiles.append(torch.tensor([local(int(t)) for t in s["tiles"]], dtype=torch.long))
    length = max(len(s["codes"]) + len(s["answer"]) for s in samples)
    n = len(samples)
    codes = torch.full((n, length), -1 - prompt_text.pad_id, dtype=torch.long)
    labels = torch.full((n, length), IGNORE, dtype=torch.long)
    mask = torch.zeros((n, length), dtype=torch.long)
    hr = torch.zeros((n, length), dtype=torch.bool)
    box = torch.zeros((n, length), dtype=torch.bool)
    dist = torch.full((n, length), float("inf"))
    xy = torch.zeros((n, length, 2))
    query = torch.zeros(n, dtype=torch.long)
    for b, s in enumerate(samples):
        p, a = len(s["codes"]), len(s["answer"])
        codes[b, :p] = torch.from_numpy(s["codes"].astype(np.int64))
        codes[b, p:p + a] = -1 - torch.from_numpy(s["answer"].astype(np.int64))
        labels[b, p:p + a] = torch.from_numpy(s["answer"].astype(np.int64))
        mask[b, :p + a] = 1
        hr[b, :p] = torch.from_numpy(s["hr"])
        box[b, :p] = torch.from_numpy(s["box"])
        dist[b, :p] = torch.from_numpy(s["dist"].astype(np.float32))
        xy[b, :p] = torch.from_numpy(s["xy"].astype(np.float32))
        query[b] = p - 1
    images = torch.from_numpy(np.ascontiguousarray(cache.images[image_ids]))
    batch = {"images": images, "thumb": thumbs, "tiles": tiles, "codes": codes, "labels": labels,
             "attention_mask": mask, "hr": hr, "box": box, "dist": dist, "xy": xy, "query": query,
             "pad_id": prompt_text.pad_id, "kind": [s["kind"] for s in samples],
             "category": torch.tensor([s["category"] for s in samples], dtype=torch.long)}
    if cache.has_dense:
        batch.update(dense_targets(cache, image_ids, set(thumbs)))
    return batch


def dense_targets(cache, image_ids: List[int], thumbs) -> dict:
    """The dense labels of a batch's images (local indices `thumbs` are thumbnails: patch-grid
    tokens; the others tiles: pooled tokens)."""
    def stack(local):
        parts = [cache.image_targets(image_ids[i]) for i in local]
        return torch.from_numpy(np.stack(parts)) if parts else torch.zeros((0, 0, len(DENSE_HEADS)),
                                                                           dtype=torch.int8)
    thumb_local = sorted(thumbs)
    tile_local = [i for i in range(len(image_ids)) if i not in thumbs]
    return {"dense_thumb_images": torch.tensor(thumb_local, dtype=torch.long),
            "dense_tile_images": torch.tensor(tile_local, dtype=torch.long),
            "dense_thumb": stack(thumb_local), "dense_tile": stack(tile_local)}
