"""The LLM's dtype: asked for, else the bundle's where the device runs it well (engine.llm)."""

from __future__ import annotations

import json
import shutil

import pytest

from rs_vqa_plugin.engine import llm as llm_module
from rs_vqa_plugin.engine.errors import RuntimeSetupError

pytest_plugins = ["tests.fixtures_models"]


@pytest.mark.parametrize("bundle_dtype,native,want", [
    ("float32", True, "float32"),     # the bundled default model: trained and shipped in float32
    ("bfloat16", True, "bfloat16"),   # measured 2.3x faster than float32 at half the memory
    ("float16", True, "bfloat16"),
    ("bfloat16", False, "float32"),   # emulated bfloat16 is slower than float32
    (None, True, "float32"),
])
def test_cpu_follows_the_bundle_where_bfloat16_is_native(monkeypatch, bundle_dtype, native, want):
    import torch

    monkeypatch.setattr(llm_module, "cpu_has_native_bf16", lambda: native)
    assert llm_module.resolve_dtype("cpu", None, bundle_dtype) == getattr(torch, want)
    assert llm_module.resolve_dtype("cpu", "auto", bundle_dtype) == getattr(torch, want)


@pytest.mark.parametrize("bundle_dtype,bf16_supported,want", [
    ("float32", True, "float32"), ("float16", True, "float16"), ("bfloat16", True, "bfloat16"),
    ("bfloat16", False, "float16"), (None, True, "bfloat16"), (None, False, "float16"),
])
def test_cuda_follows_the_bundle(monkeypatch, bundle_dtype, bf16_supported, want):
    import torch

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    assert llm_module.resolve_dtype("cuda", None, bundle_dtype) == getattr(torch, want)


def test_an_asked_dtype_wins_and_an_unknown_one_is_refused():
    import torch

    assert llm_module.resolve_dtype("cpu", "bfloat16", "float32") == torch.bfloat16
    with pytest.raises(RuntimeSetupError, match="choose one of auto, float32"):
        llm_module.resolve_dtype("cpu", "fp8", None)


def test_native_bf16_is_read_from_the_cpu_flags():
    flags = open("/proc/cpuinfo").read()
    assert llm_module.cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


@pytest.fixture(scope="module")
def bf16_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle, its manifest saying the LLM is bfloat16 (as converted Qwen2 bundles do)."""
    folder = tmp_path_factory.mktemp("bf16") / "bundle"
    shutil.copytree(tiny_bundle, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["llm"]["dtype"] = "bfloat16"
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def test_a_bfloat16_bundle_answers_in_bfloat16_with_rope_in_float32(bf16_bundle, monkeypatch, tmp_path):
    import torch

    from rs_vqa_plugin.engine.pipeline import AskOptions, Engine
    from tests.rasters import make_rgb_scene

    monkeypatch.setattr(llm_module, "cpu_has_native_bf16", lambda: True)
    engine = Engine(bf16_bundle, device="cpu")
    assert engine.llm.dtype == torch.bfloat16
    assert next(engine.llm.model.parameters()).dtype == torch.bfloat16
    # transformers computes the rotary frequencies in float32 whatever the weights' dtype
    assert engine.llm.model.model.rotary_emb.inv_freq.dtype == torch.float32
    answer = engine.ask(make_rgb_scene(tmp_path / "scene.tif", size=700, seed=3), "What is here?",
                        AskOptions(mode="grid", max_new_tokens=3))
    assert answer.trace["llm_dtype"] == "bfloat16"
    # the memory budget prices the KV cache at the LLM's dtype
    assert engine.budget_dims.dtype_bytes == 2
    assert Engine(bf16_bundle, device="cpu", dtype="float32").llm.dtype == torch.float32
