"""Other LLaVA families through the hf-llava converter: OneVision with a SigLIP tower, a Llama LLM,
a learned image_newline in the checkpoint, bfloat16 weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rs_vqa_plugin.engine.bundle import load_bundle


@pytest.fixture(scope="module")
def onevision(tmp_path_factory):
    import torch
    from transformers import (LlamaConfig, LlavaOnevisionConfig,
                              LlavaOnevisionForConditionalGeneration, SiglipVisionConfig)

    from rs_vqa_plugin.modeling.quiet import quiet_model_libraries
    from rs_vqa_plugin.modeling.tiny_model import train_tokenizer

    quiet_model_libraries()
    tokenizer = train_tokenizer(600)
    torch.manual_seed(7)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, image_size=56, patch_size=14)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                       num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                       rope_theta=50000.0)
    config = LlavaOnevisionConfig(vision_config=vision, text_config=text,
                                  image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                                  vision_feature_layer=-1, vision_feature_select_strategy="full")
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.model.image_newline.normal_()
    src = tmp_path_factory.mktemp("onevision") / "src"
    # Saved in bfloat16 like real checkpoints; the float32 copy below holds the same values.
    model = model.to(torch.bfloat16)
    model.save_pretrained(src)
    tokenizer.save_pretrained(src)
    return model.float(), src


def test_onevision_siglip_llama_converts(onevision, tmp_path):
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForCausalLM

    from rs_vqa_plugin.engine.rfm import RegionFocus
    from rs_vqa_plugin.modeling.convert_hf import convert_hf_llava

    model, src = onevision
    bundle = load_bundle(convert_hf_llava(src, tmp_path / "bundle"))
    m = bundle.manifest
    assert (m.family, m.vision["tower"], m.vision["drop_cls"]) == ("llama", "siglip", False)
    assert (m.patch_grid, m.pooled_grid, m.n_max) == (4, 2, 40)
    assert m.image_mean == [0.5, 0.5, 0.5]
    assert m.embeddings["image_newline"] == "checkpoint image_newline"
    assert np.array_equal(bundle.newline, model.model.image_newline.detach().numpy())
    assert m.llm["dtype"] == "bfloat16"
    assert json.loads((bundle.llm_dir / "config.json").read_text())["dtype"] == "bfloat16"

    # Vision: SigLIP keeps every patch (no CLS), last hidden state, projector.
    pixels = np.random.default_rng(0).normal(size=(3, 3, 56, 56)).astype(np.float32)
    session = ort.InferenceSession(str(bundle.vision_path), providers=["CPUExecutionProvider"])
    tokens = session.run(["tokens"], {"pixels": pixels})[0]
    with torch.no_grad():
        hidden = model.model.vision_tower(torch.from_numpy(pixels),
                                          output_hidden_states=True).hidden_states[-1]
        ref = model.model.multi_modal_projector(hidden).numpy()
    assert np.abs(tokens - ref).max() <= 1e-4

    # RFM of a Llama LLM (rope_theta 50000) against the LLM's own eager attention.
    llm = AutoModelForCausalLM.from_pretrained(bundle.llm_dir, dtype=torch.float32,
                                               attn_implementation="eager").eval()
    embeds = np.random.default_rng(1).normal(scale=0.5, size=(40, 64)).astype(np.float32)
    hr = np.zeros(40, dtype=bool)
    hr[4:30] = True
    scores = RegionFocus(bundle, device="cpu").score(embeds, hr, 39)
    with torch.no_grad():
        attn = llm.model(inputs_embeds=torch.from_numpy(embeds)[None],
                         output_attentions=True).attentions[m.rfm["scoring_layer"]][0, :, 39]
    row = attn.numpy() * hr[None]
    expected = (row / row.sum(axis=1, keepdims=True)).mean(axis=0)
    assert np.abs(scores - expected).max() <= 1e-4
