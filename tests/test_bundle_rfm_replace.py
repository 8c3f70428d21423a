"""replace_rfm (used by distillation) and ONNX files that keep their weights in `<name>.data`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from rs_vqa_plugin.engine.bundle import load_bundle
from rs_vqa_plugin.engine.errors import BundleError

pytest_plugins = ["tests.fixtures_models"]


def test_replace_rfm_with_external_data(tiny_bundle, tmp_path, monkeypatch):
    import torch

    from rs_vqa_plugin.engine.rfm import RegionFocus
    from rs_vqa_plugin.modeling import onnx_io
    from rs_vqa_plugin.modeling.bundle_writer import replace_rfm
    from rs_vqa_plugin.modeling.rfm_torch import RegionFocusTorch

    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, root)
    rfm = RegionFocusTorch.load(root / "rfm.safetensors")
    with torch.no_grad():                      # a "trained" RFM: different scoring weights
        rfm.layers[-1].self_attn.q_proj.weight.mul_(3.0)
    # Real 7B RFMs exceed the protobuf limit; force the external-data path at tiny size.
    monkeypatch.setattr(onnx_io, "EXTERNAL_DATA_BYTES", 0)
    replace_rfm(root, rfm, made="distilled", loss={"lambda_hr": 2.0}, provenance_note="test")
    assert (root / "rfm.onnx.data").is_file()
    assert not list(root.glob("*.new*"))
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["rfm"]["made"] == "distilled" and manifest["rfm"]["loss"] == {"lambda_hr": 2.0}
    assert manifest["provenance"]["history"] == ["test"]

    bundle = load_bundle(root)
    embeds = np.random.default_rng(0).normal(size=(30, 64)).astype(np.float32)
    hr = np.arange(30) < 20
    new = RegionFocus(bundle, device="cpu").score(embeds, hr, 29)
    old = RegionFocus(load_bundle(tiny_bundle), device="cpu").score(embeds, hr, 29)
    with torch.no_grad():
        ref = rfm.scores(torch.from_numpy(embeds), torch.from_numpy(hr), torch.tensor(29)).numpy()
    assert np.abs(new - ref).max() <= 1e-5 and np.abs(new - old).max() > 1e-4
    assert torch.equal(RegionFocusTorch.load(root / "rfm.safetensors").layers[-1]
                       .self_attn.q_proj.weight, rfm.layers[-1].self_attn.q_proj.weight)

    (root / "rfm.onnx.data").unlink()
    with pytest.raises(BundleError, match="rfm.onnx.data is missing"):
        load_bundle(root)
