"""The paper's attention-distillation loss (METHOD §4): teacher = LLM attention rows, student = RFM.

Per layer pair and head:  lambda_kl * KL(teacher || student) over the whole attention row
                        + lambda_hr * KL(teacher_hr || student_hr) over the HR slice, renormalised
                        + lambda_mse * MSE(teacher_hr, student_hr) over the same HR distributions,
averaged over pairs, query rows and heads. (The released code differs: temperature 2 and MSE on
logits, a plain mean over all terms. We follow the paper and record these settings in the bundle.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class DistillLossSettings:
    lambda_kl: float = 1.0
    lambda_hr: float = 2.0
    lambda_mse: float = 1.0

    def to_dict(self) -> dict:
        # What the manifest records under rfm.loss, so a reader knows how the RFM was trained.
        return {"form": "paper", "lambda_kl": self.lambda_kl, "lambda_hr": self.lambda_hr,
                "lambda_mse": self.lambda_mse, "kl": "teacher||student, full row and HR slice",
                "mse_on": "renormalised HR attention probabilities",
                "reduction": "mean over layer pairs, query rows and heads"}


def _kl(teacher: torch.Tensor, student_log: torch.Tensor) -> torch.Tensor:
    """KL(t || s) summed over the last axis; t may hold exact zeros (causal future, padding)."""
    return (torch.xlogy(teacher, teacher) - teacher * student_log).sum(dim=-1)


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
    mse_hr = (teacher_hr - student_hr_log.exp()).pow(2).mean(dim=-1)

    parts = {"kl": kl_full.mean(), "kl_hr": kl_hr.mean(), "mse_hr": mse_hr.mean()}
    total = (settings.lambda_kl * parts["kl"] + settings.lambda_hr * parts["kl_hr"]
             + settings.lambda_mse * parts["mse_hr"])
    return total, parts
