"""The RFM: ONNX scores vs the LLM's own attention, the fresh copy, persistence (issue 4)."""

from __future__ import annotations

import numpy as np
import pytest

from rs_vqa_plugin.engine.bundle import load_bundle

pytest_plugins = ["tests.fixtures_models"]


@pytest.fixture(scope="module")
def eager_llm(tiny_bundle):
    """The bundle's LLM with eager attention, so HF returns its attention probabilities."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(load_bundle(tiny_bundle).llm_dir,
                                                dtype=torch.float32,
                                                attn_implementation="eager").eval()


def _hf_attention(llm, embeds: np.ndarray):
    import torch

    with torch.no_grad():
        out = llm.model(inputs_embeds=torch.from_numpy(embeds)[None], output_attentions=True)
    return [a[0].numpy() for a in out.attentions]                    # per layer [H, L, L]


def _hf_scores(attn_layer: np.ndarray, hr: np.ndarray, query: int) -> np.ndarray:
    """Score from the LLM's own attention row: restricted to HR keys and renormalised (the same as
    a softmax over the HR logits, since HR keys precede the query), then the head mean."""
    row = attn_layer[:, query, :] * hr[None]
    row = row / row.sum(axis=1, keepdims=True)
    return row.mean(axis=0)


@pytest.mark.parametrize("length", [37, 130])
def test_onnx_rfm_scores_match_llm_attention(tiny_bundle, eager_llm, length):
    from rs_vqa_plugin.engine.rfm import RegionFocus

    bundle = load_bundle(tiny_bundle)
    rfm = RegionFocus(bundle, device="cpu")
    rng = np.random.default_rng(length)
    embeds = rng.normal(scale=0.5, size=(length, bundle.manifest.hidden_size)).astype(np.float32)
    hr = np.zeros(length, dtype=bool)
    hr[5:length - 6] = True
    hr[10:length:7] = False                           # newline-like holes inside the HR span
    query = length - 1
    scores = rfm.score(embeds, hr, query)
    layer = bundle.manifest.rfm["scoring_layer"]
    expected = _hf_scores(_hf_attention(eager_llm, embeds)[layer], hr, query)
    assert scores.shape == (length,)
    assert np.abs(scores - expected).max() <= 1e-4
    assert np.all(scores[~hr] == 0.0)
    assert abs(float(scores.sum()) - 1.0) < 1e-5
    assert scores[hr].std() > 0                       # not uniform: real attention


def test_fresh_rfm_reproduces_llm_attention_rows(eager_llm):
    """Copied layers [l1-1, l1, ...] see the same hidden states as the LLM where they are
    consecutive, so their attention rows equal the LLM's before any training."""
    import torch

    from rs_vqa_plugin.modeling.rfm_torch import RegionFocusTorch, default_layer_list

    depth = eager_llm.config.num_hidden_layers
    layers = default_layer_list(depth)
    assert layers == [1, 2]
    rfm = RegionFocusTorch.from_llm(eager_llm, layers)
    rng = np.random.default_rng(5)
    embeds = rng.normal(scale=0.5, size=(50, eager_llm.config.hidden_size)).astype(np.float32)
    attention = _hf_attention(eager_llm, embeds)
    queries = [49, 30]
    with torch.no_grad():
        rows = rfm.forward_attention_rows(torch.from_numpy(embeds), queries)
    assert list(rows) == layers
    for layer, logits in rows.items():
        assert logits.shape == (2, eager_llm.config.num_attention_heads, 50)
        probs = torch.softmax(logits, dim=-1).numpy()
        for i, q in enumerate(queries):
            assert np.abs(probs[i] - attention[layer][:, q, :]).max() <= 1e-5
    # A non-consecutive list: the first pair (copies of 0 and 1) is still exact.
    sparse = RegionFocusTorch.from_llm(eager_llm, [1, 3])
    assert sparse.config.copied_from == [0, 1, 3]
    with torch.no_grad():
        row = torch.softmax(sparse.forward_attention_rows(torch.from_numpy(embeds), 49)[1], -1)
    assert np.abs(row.numpy() - attention[1][:, 49, :]).max() <= 1e-5


def test_rfm_weights_round_trip_and_match_onnx(tiny_bundle, tmp_path):
    import torch

    from rs_vqa_plugin.engine.rfm import RegionFocus
    from rs_vqa_plugin.modeling.rfm_torch import RegionFocusTorch

    bundle = load_bundle(tiny_bundle)
    rfm = RegionFocusTorch.load(bundle.rfm_weights_path)
    assert rfm.config.layers == bundle.manifest.rfm["layers"]
    copy_path = rfm.save(tmp_path / "rfm.safetensors")
    again = RegionFocusTorch.load(copy_path)
    for key, value in rfm.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    embeds = np.random.default_rng(9).normal(size=(64, rfm.config.hidden_size)).astype(np.float32)
    hr = np.arange(64) % 2 == 1
    with torch.no_grad():
        torch_scores = again.scores(torch.from_numpy(embeds), torch.from_numpy(hr),
                                    torch.tensor(63)).numpy()
    onnx_scores = RegionFocus(bundle, device="cpu").score(embeds, hr, 63)
    assert np.abs(torch_scores - onnx_scores).max() <= 1e-5


def test_default_layer_list_scales_paper_choice():
    from rs_vqa_plugin.modeling.rfm_torch import copied_layer_ids, default_layer_list

    assert default_layer_list(28) == [1, 5, 11, 14]
    assert default_layer_list(32) == [1, 6, 13, 16]
    assert default_layer_list(3) == [1, 2]
    assert copied_layer_ids([1, 5, 11, 14]) == [0, 1, 5, 11, 14]
    with pytest.raises(ValueError):
        copied_layer_ids([0, 3])
