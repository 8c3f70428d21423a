"""Session fixtures for model tests: a tiny LLaVA folder and the bundle converted from it.

Other streams use them with `pytest_plugins = ["tests.fixtures_models"]` in their test module."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory):
    """A transformers LLaVA folder (CLIP 112 px tiles + 4-layer Qwen2, seed 0)."""
    from rs_vqa_plugin.modeling.quiet import quiet_model_libraries
    from rs_vqa_plugin.modeling.tiny_model import TinyModelConfig, write_tiny_llava

    quiet_model_libraries()
    return write_tiny_llava(tmp_path_factory.mktemp("tiny-llava") / "llava", TinyModelConfig())


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_llava_dir):
    """Path of a tiny bundle (the `tiny-model` defaults), built once per test session."""
    from rs_vqa_plugin.modeling.convert_hf import convert_hf_llava

    out = tmp_path_factory.mktemp("tiny-bundle") / "tiny"
    return convert_hf_llava(tiny_llava_dir, out, provenance={"source": "tiny-model", "seed": 0},
                            licence="Apache-2.0 (generated, random weights)")
