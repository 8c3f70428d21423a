"""The distillation loss on hand-made attention rows (values checked against hand computation)."""

from __future__ import annotations

import math

import pytest
import torch

from rs_vqa_plugin.modeling.distill_loss import (LOG_FLOOR, MSE_FORMS, DistillLossSettings,
                                                 distill_loss)


def _logits_of(probs):
    return torch.log(torch.as_tensor(probs, dtype=torch.float32))


def test_identical_rows_give_zero_loss():
    probs = torch.tensor([[[0.1, 0.2, 0.3, 0.4]]])                 # [pairs=1, H=1, L=4]
    total, parts = distill_loss(probs, _logits_of(probs), torch.tensor([False, True, True, True]))
    assert total.item() == pytest.approx(0.0, abs=1e-6)
    assert all(v.item() == pytest.approx(0.0, abs=1e-6) for v in parts.values())


def _centred_log(values):
    logs = [math.log(len(values) * v + LOG_FLOOR) for v in values]
    return [x - sum(logs) / len(logs) for x in logs]


@pytest.mark.parametrize("form", ["probs", "scaled_probs", "centred_log"])
def test_values_match_hand_computation(form):
    teacher = torch.tensor([[0.5, 0.25, 0.25]])                       # H=1, L=3
    student = torch.tensor([[0.25, 0.25, 0.5]])
    hr = torch.tensor([False, True, True])
    total, parts = distill_loss(teacher, _logits_of(student), hr, DistillLossSettings(mse_form=form))
    kl = 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(1.0) + 0.25 * math.log(0.25 / 0.5)
    t_hr, s_hr = [0.5, 0.5], [1 / 3, 2 / 3]                           # renormalised HR slices
    kl_hr = sum(t * math.log(t / s) for t, s in zip(t_hr, s_hr))
    view = {"probs": lambda p: p, "scaled_probs": lambda p: [2 * v for v in p],
            "centred_log": _centred_log}[form]
    mse = sum((t - s) ** 2 for t, s in zip(view(t_hr), view(s_hr))) / 2
    assert parts["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert parts["kl_hr"].item() == pytest.approx(kl_hr, rel=1e-5)
    assert parts["mse_hr"].item() == pytest.approx(mse, rel=1e-5)
    assert total.item() == pytest.approx(kl + 2 * kl_hr + mse, rel=1e-5)   # paper's lambdas


def test_default_form_is_centred_log_and_the_old_form_stays_selectable():
    assert DistillLossSettings().mse_form == "centred_log"
    old = DistillLossSettings(mse_form="probs")
    record = old.to_dict()
    assert record["mse_form"] == "probs" and record["mse_on"] == MSE_FORMS["probs"]
    assert DistillLossSettings.from_dict(record) == old
    assert DistillLossSettings.from_dict(DistillLossSettings().to_dict()) == DistillLossSettings()
    # records written before mse_form existed (e.g. the bundled default model's) mean 'probs'
    legacy = {k: v for k, v in record.items() if k != "mse_form"}
    assert DistillLossSettings.from_dict(legacy) == old
    with pytest.raises(ValueError, match="centred_log"):
        DistillLossSettings(mse_form="logits")


def _peaked_rows(n_hr, seed, noise=0.5):
    """An attention sink, text keys and log-normal HR attention (logit std 2.5) over 2 pairs x 4
    heads; the student's logits are the teacher's plus noise."""
    g = torch.Generator().manual_seed(seed)
    prefix, suffix = 31, 12
    logits = torch.randn(2, 4, prefix + n_hr + suffix, generator=g)
    logits[..., 0] += 8.0
    logits[..., prefix:prefix + n_hr] = 2.5 * torch.randn(2, 4, n_hr, generator=g)
    hr = torch.zeros(logits.shape[-1], dtype=torch.bool)
    hr[prefix:prefix + n_hr] = True
    return torch.softmax(logits, -1), logits + noise * torch.randn(logits.shape, generator=g), hr


def _weighted_shares(parts, settings):
    weighted = [settings.lambda_kl * parts["kl"].item(), settings.lambda_hr * parts["kl_hr"].item(),
                settings.lambda_mse * parts["mse_hr"].item()]
    return [w / sum(weighted) for w in weighted]


def test_every_term_contributes_at_1300_hr_keys():
    """The default form: each weighted term is within 10x of the largest on peaked rows at N =
    1,300 and at N = 100 and 5,000 alike; the old form's MSE contributes ~nothing, and N x p grows
    with N until it swamps both KL terms."""
    for n in (100, 1300, 5000):
        teacher, student, hr = _peaked_rows(n, seed=n)
        shares = {}
        for form in MSE_FORMS:
            settings = DistillLossSettings(mse_form=form)
            shares[form] = _weighted_shares(distill_loss(teacher, student, hr, settings)[1], settings)
        assert min(shares["centred_log"]) > 0.1 * max(shares["centred_log"]), (n, shares)
        assert shares["probs"][2] < 1e-2, (n, shares)
        if n >= 1300:
            assert shares["scaled_probs"][2] > 0.9, (n, shares)


def test_centred_log_is_the_mse_of_centred_logits_above_the_floor():
    """Where the attention is well above the floor the term equals the MSE of the HR logits, each
    centred (a constant shift of either side's logits changes nothing)."""
    torch.manual_seed(1)
    a = torch.randn(3, 400)
    b = a + 0.3 * torch.randn(3, 400) + 5.0
    hr = torch.ones(400, dtype=torch.bool)
    _, parts = distill_loss(torch.softmax(a, -1), b, hr)
    centred = lambda x: x - x.mean(-1, keepdim=True)           # noqa: E731
    want = (centred(a) - centred(b)).pow(2).mean()
    assert parts["mse_hr"].item() == pytest.approx(want.item(), rel=2e-2)


def test_underflowed_teacher_keys_stay_finite_and_bounded():
    """fp16 teachers underflow small attention to exact zeros: the floor keeps the term finite and
    bounded by (log of the floor)^2, whatever the student does far below it."""
    teacher = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    logits = torch.tensor([[3.0, 3.0, -60.0, -200.0]], requires_grad=True)
    total, parts = distill_loss(teacher, logits, torch.ones(4, dtype=torch.bool))
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(logits.grad).all()
    assert parts["mse_hr"].item() < 1e-6       # both below the floor on the same keys: agreed


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
