"""The paper's attention-distillation loss (METHOD §4): teacher = LLM attention rows, student = RFM.

Per layer pair and head:  lambda_kl * KL(teacher || student) over the whole attention row
                        + lambda_hr * KL(teacher_hr || student_hr) over the HR slice, renormalised
                        + lambda_mse * MSE(teacher_hr, student_hr) over the same HR slice,
averaged over pairs, query rows and heads. (The released code differs: temperature 2 and MSE on
logits, a plain mean over all terms. We follow the paper and record these settings in the bundle.)

What the MSE compares is `mse_form` (the paper does not say):
- "centred_log" (default): log(N * p + 1e-4) over the N HR keys, centred per row, i.e. the
  attention logits up to their free shift (the released code's MSE is on logits too) with a soft
  floor far below the uniform level 1/N. Every key weighs the same, so the term fixes the order of
  the many low-mass keys around the top-alpha threshold, where the two KL terms (weighted by the
  teacher's mass) hardly look; its size does not depend on N, and for equal small errors on every
  key it is about twice the KL over the same slice, so lambda_mse = 1 keeps the terms on a par.
  The floor keeps underflowed (fp16) or vanishing teacher entries from dominating.
- "scaled_probs": N * p (mean 1 per key); on the KL's scale only for flat rows, far above it for
  peaked ones (it grows with N / effective number of keys), and dominated by the peak keys.
- "probs": the renormalised probabilities themselves, as first implemented (and as the bundled
  default model was trained): about 1/N^2 of the others, ~1e-7 at N = 1,300 keys, so it
  contributes nothing; kept to reproduce earlier runs.
bench/bench_distill_loss.py measures the three (term sizes and short distillations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch.nn import functional as F

# Soft floor of centred_log, relative to the uniform level 1/N: far below any top-alpha threshold.
LOG_FLOOR = 1e-4
MSE_FORMS = {
    "centred_log": f"log(N * p + {LOG_FLOOR:g}) of the renormalised HR attention (N = HR keys), "
                   "centred over the HR keys: the HR attention logits up to their shift, with a "
                   "soft floor",
    "scaled_probs": "N * p of the renormalised HR attention (N = HR keys; mean 1 per key)",
    "probs": "renormalised HR attention probabilities",
}


@dataclass(frozen=True)
class DistillLossSettings:
    lambda_kl: float = 1.0
    lambda_hr: float = 2.0
    lambda_mse: float = 1.0
    mse_form: str = "centred_log"

    def __post_init__(self):
        if self.mse_form not in MSE_FORMS:
            raise ValueError(f"Unknown MSE form {self.mse_form!r}: choose one of "
                             f"{', '.join(MSE_FORMS)}.")

    def to_dict(self) -> dict:
        # What the manifest records under rfm.loss, so a reader knows how the RFM was trained.
        return {"form": "paper", "lambda_kl": self.lambda_kl, "lambda_hr": self.lambda_hr,
                "lambda_mse": self.lambda_mse, "kl": "teacher||student, full row and HR slice",
                "mse_form": self.mse_form, "mse_on": MSE_FORMS[self.mse_form],
                "mse_reduction": "mean over HR keys",
                "reduction": "mean over layer pairs, query rows and heads"}

    @classmethod
    def from_dict(cls, data: dict) -> "DistillLossSettings":
        """Inverse of to_dict; records written before mse_form existed used 'probs'."""
        return cls(lambda_kl=float(data["lambda_kl"]), lambda_hr=float(data["lambda_hr"]),
                   lambda_mse=float(data["lambda_mse"]), mse_form=data.get("mse_form", "probs"))


def _kl(teacher: torch.Tensor, student_log: torch.Tensor) -> torch.Tensor:
    """KL(t || s) summed over the last axis; t may hold exact zeros (causal future, padding)."""
    return (torch.xlogy(teacher, teacher) - teacher * student_log).sum(dim=-1)


def _mse_view(probs: torch.Tensor, form: str) -> torch.Tensor:
    """What the MSE compares, from renormalised HR probabilities [..., N]."""
    if form == "probs":
        return probs
    n = probs.shape[-1]
    if form == "scaled_probs":
        return probs * n
    logs = torch.log(probs * n + LOG_FLOOR)
    return logs - logs.mean(dim=-1, keepdim=True)


def distill_loss(teacher_probs: torch.Tensor, student_logits: torch.Tensor, hr_mask: torch.Tensor,
                 settings: DistillLossSettings = DistillLossSettings()
                 ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """teacher_probs: attention probabilities [..., H, L] (rows sum to 1, e.g. eager attention
    weights of the LLM, detached); student_logits: pre-softmax attention logits of the same shape
    (keys after the query already at a very negative finite value, as RegionFocusTorch gives them);
    hr_mask: bool [L], the HR token positions. Leading axes (pairs, query rows) are averaged.

    Returns (total, {"kl": ..., "kl_hr": ..., "mse_hr": ...}), each a scalar tensor; the parts are
    unweighted means so they can be logged and compared."""
    if teacher_probs.shape != student_logits.shape:
        raise ValueError(f"teacher {tuple(teacher_probs.shape)} and student "
                         f"{tuple(student_logits.shape)} attention rows differ in shape")
    hr = hr_mask.to(device=student_logits.device, dtype=torch.bool)
    if hr.dim() != 1 or hr.shape[0] != student_logits.shape[-1]:
        raise ValueError(f"hr_mask must be [L={student_logits.shape[-1]}], got {tuple(hr.shape)}")
    if not bool(hr.any()):
        raise ValueError("hr_mask selects no token: nothing to distil")
    teacher = teacher_probs.detach().float()
    logits = student_logits.float()

    kl_full = _kl(teacher, F.log_softmax(logits, dim=-1))

    teacher_hr = teacher[..., hr]
    # Renormalise the teacher over the HR span; a row with (numerically) no HR mass stays defined.
    teacher_hr = teacher_hr / teacher_hr.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    student_hr_log = F.log_softmax(logits[..., hr], dim=-1)
    kl_hr = _kl(teacher_hr, student_hr_log)
    form = settings.mse_form
    mse_hr = (_mse_view(teacher_hr, form) - _mse_view(student_hr_log.exp(), form)).pow(2).mean(-1)

    parts = {"kl": kl_full.mean(), "kl_hr": kl_hr.mean(), "mse_hr": mse_hr.mean()}
    total = (settings.lambda_kl * parts["kl"] + settings.lambda_hr * parts["kl_hr"]
             + settings.lambda_mse * parts["mse_hr"])
    return total, parts
