"""The RFM's image-position input (RFMConfig.image_xy): zero-initialised it changes nothing, trained
it moves scores by where a token is, and rfm.onnx / the engine's RegionFocus compute the same."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


def _rfm():
    import torch

    from rs_vqa_plugin.modeling.rfm_torch import RegionFocusTorch, RFMConfig

    torch.manual_seed(3)
    config = RFMConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                       intermediate_size=96, layers=[1, 2], qkv_bias=True)
    return RegionFocusTorch(config).eval()


def _inputs(length=40):
    import torch

    torch.manual_seed(5)
    embeds = torch.randn(length, 64)
    hr = torch.zeros(length, dtype=torch.bool)
    hr[10:34] = True
    xy = torch.zeros(length, 2)
    xy[10:34] = torch.rand(24, 2)
    return embeds, hr, xy


def test_zero_initialised_positions_change_nothing_and_are_required():
    import torch

    rfm = _rfm()
    embeds, hr, xy = _inputs()
    before = rfm.scores(embeds, hr, torch.tensor(39))
    rfm.add_image_xy(6)
    assert rfm.config.image_xy == 6
    torch.testing.assert_close(rfm.scores(embeds, hr, torch.tensor(39), image_xy=xy), before)
    with pytest.raises(ValueError, match="image_xy"):
        rfm.scores(embeds, hr, torch.tensor(39))
    # once trained (non-zero), where a token is moves its score
    torch.nn.init.normal_(rfm.image_xy.weight, std=0.5)
    moved = rfm.scores(embeds, hr, torch.tensor(39), image_xy=xy.flip(0))
    assert not torch.allclose(moved, rfm.scores(embeds, hr, torch.tensor(39), image_xy=xy))


def test_saved_and_exported_rfm_with_positions_match_torch(tmp_path):
    import torch

    from rs_vqa_plugin.engine.errors import InputError
    from rs_vqa_plugin.engine.rfm import RegionFocus
    from rs_vqa_plugin.modeling.rfm_torch import RegionFocusTorch

    rfm = _rfm().add_image_xy(4)
    torch.nn.init.normal_(rfm.image_xy.weight, std=0.5)
    loaded = RegionFocusTorch.load(rfm.save(tmp_path / "rfm.safetensors"))
    embeds, hr, xy = _inputs(57)
    expected = rfm.scores(embeds, hr, torch.tensor(56), image_xy=xy).detach().numpy()
    np.testing.assert_allclose(loaded.scores(embeds, hr, torch.tensor(56), image_xy=xy).detach().numpy(),
                               expected, atol=1e-6)
    path = loaded.export_onnx(tmp_path / "rfm.onnx")
    bundle = SimpleNamespace(manifest=SimpleNamespace(hidden_size=64), rfm_path=path)
    engine_rfm = RegionFocus(bundle, device="cpu")
    assert engine_rfm.takes_image_xy
    got = engine_rfm.score(embeds.numpy(), hr.numpy(), 56, image_xy=xy.numpy())
    np.testing.assert_allclose(got, expected, atol=2e-6)
    with pytest.raises(InputError, match="image positions"):
        engine_rfm.score(embeds.numpy(), hr.numpy(), 56)


def test_image_xy_are_the_tokens_centres():
    from rs_vqa_plugin.engine.select import image_xy
    from rs_vqa_plugin.engine.pyramid import plan_pyramid

    plan = plan_pyramid(4096, 2048, tile_size=64, token_grid=4)
    level = 2
    lv = plan.level(level)
    rows = np.array([0, lv.rows * 4 - 1])
    cols = np.array([0, lv.cols * 4 - 1])
    xy = image_xy(plan, level, rows, cols, 6, np.array([2, 3]))
    assert xy.shape == (6, 2) and not xy[[0, 1, 4, 5]].any()
    assert 0 < xy[2, 0] < 0.1 and 0 < xy[2, 1] < 0.1        # the top-left token
    assert 0.9 < xy[3, 0] < 1 and 0.9 < xy[3, 1] < 1        # the bottom-right one
