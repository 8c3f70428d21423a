"""The distillation loss on hand-made attention rows (values checked against hand computation)."""

from __future__ import annotations

import math

import pytest
import torch

from rs_vqa_plugin.modeling.distill_loss import DistillLossSettings, distill_loss


def _logits_of(probs):
    return torch.log(torch.as_tensor(probs, dtype=torch.float32))


def test_identical_rows_give_zero_loss():
    probs = torch.tensor([[[0.1, 0.2, 0.3, 0.4]]])                 # [pairs=1, H=1, L=4]
    total, parts = distill_loss(probs, _logits_of(probs), torch.tensor([False, True, True, True]))
    assert total.item() == pytest.approx(0.0, abs=1e-6)
    assert all(v.item() == pytest.approx(0.0, abs=1e-6) for v in parts.values())


def test_values_match_hand_computation():
    teacher = torch.tensor([[0.5, 0.25, 0.25]])                       # H=1, L=3
    student = torch.tensor([[0.25, 0.25, 0.5]])
    hr = torch.tensor([False, True, True])
    total, parts = distill_loss(teacher, _logits_of(student), hr)
    kl = 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(1.0) + 0.25 * math.log(0.25 / 0.5)
    t_hr, s_hr = [0.5, 0.5], [1 / 3, 2 / 3]                           # renormalised HR slices
    kl_hr = sum(t * math.log(t / s) for t, s in zip(t_hr, s_hr))
    mse = sum((t - s) ** 2 for t, s in zip(t_hr, s_hr)) / 2
    assert parts["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert parts["kl_hr"].item() == pytest.approx(kl_hr, rel=1e-5)
    assert parts["mse_hr"].item() == pytest.approx(mse, rel=1e-5)
    assert total.item() == pytest.approx(kl + 2 * kl_hr + mse, rel=1e-5)   # paper's lambdas


def test_mean_over_pairs_and_heads_and_custom_weights():
    a = torch.tensor([0.7, 0.2, 0.1])
    b = torch.tensor([0.1, 0.2, 0.7])
    hr = torch.tensor([True, True, True])
    _, one = distill_loss(a[None], _logits_of(b)[None], hr)
    # two pairs x two heads, one differing head per pair: the mean is half the single value
    teacher = torch.stack([torch.stack([a, a]), torch.stack([a, a])])
    student = torch.stack([torch.stack([b, a]), torch.stack([a, b])])
    total, parts = distill_loss(teacher, _logits_of(student), hr,
                                DistillLossSettings(lambda_kl=0.0, lambda_hr=1.0, lambda_mse=0.0))
    assert parts["kl"].item() == pytest.approx(one["kl"].item() / 2, rel=1e-5)
    assert total.item() == pytest.approx(one["kl_hr"].item() / 2, rel=1e-5)


def test_causal_zeros_in_teacher_and_finite_mask_in_student_stay_finite():
    teacher = torch.tensor([[0.6, 0.4, 0.0, 0.0]])
    logits = torch.tensor([[0.0, 1.0, torch.finfo(torch.float32).min, torch.finfo(torch.float32).min]],
                          requires_grad=True)
    total, _ = distill_loss(teacher, logits, torch.tensor([False, True, True, False]))
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(logits.grad).all()
    assert total.item() > 0


def test_gradient_descent_moves_student_to_teacher():
    torch.manual_seed(0)
    teacher = torch.softmax(torch.randn(2, 3, 10) * 2, dim=-1)
    logits = torch.zeros(2, 3, 10, requires_grad=True)
    hr = torch.arange(10) >= 4
    opt = torch.optim.Adam([logits], lr=0.1)
    first = None
    for _ in range(200):
        loss, _ = distill_loss(teacher, logits, hr)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01 * first


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="differ in shape"):
        distill_loss(torch.ones(1, 3) / 3, torch.zeros(1, 4), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="no token"):
        distill_loss(torch.ones(1, 3) / 3, torch.zeros(1, 3), torch.zeros(3, dtype=torch.bool))
