"""Qwen2.5-VL through `convert --from hf-qwen2.5-vl` (issue 17), on tiny random folders built from
configs: the vision tower in ONNX, M-RoPE positions, thumbnail-mode parity with transformers' own
generate, the copied M-RoPE RFM against the LLM's attention row, refusals of bad folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from rs_vqa_plugin.engine.bundle import load_bundle
from rs_vqa_plugin.engine.errors import BundleError, InputError
from tests.qwen25_models import TinyQwenConfig, qwen_patches, write_tiny_qwen25
from tests.qgis_support import qgis_app, qgis_processing  # noqa: F401 (pytest fixtures)
from tests.rasters import make_rgb_scene
from tests.test_processing import rs_vqa_provider  # noqa: F401 (pytest fixture)

TILE = 168          # 6 x 6 merged tokens a tile; windows of 4 x 4 units: uneven windows
QUESTION = "How many planes are parked near the runway?"


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    from rs_vqa_plugin.modeling.quiet import quiet_model_libraries

    quiet_model_libraries()
    return write_tiny_qwen25(tmp_path_factory.mktemp("qwen25") / "src", TinyQwenConfig())


@pytest.fixture(scope="module")
def qwen_bundle(qwen_dir, tmp_path_factory):
    from rs_vqa_plugin.modeling.convert_qwen25 import convert_hf_qwen25

    return convert_hf_qwen25(qwen_dir, tmp_path_factory.mktemp("qwen25-bundle") / "b",
                             tile_size=TILE)


@pytest.fixture(scope="module")
def hf_model(qwen_dir):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(
        qwen_dir, dtype=torch.float32, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def engine(qwen_bundle):
    from rs_vqa_plugin.engine.pipeline import Engine

    return Engine(qwen_bundle, device="cpu", tile_cache_mb=0)


def test_manifest_describes_the_family(qwen_bundle):
    bundle = load_bundle(qwen_bundle)
    m = bundle.manifest
    assert (m.family, m.positions, m.newline) == ("qwen2_5_vl", "mrope", "none")
    assert (m.tile_size, m.patch_grid, m.pooled_grid, m.thumbnail_tokens) == (TILE, 6, 6, 36)
    assert bundle.separator.shape == (2, 64)
    assert (m.chat["image_start"], m.chat["image_end"]) == ("<|vision_start|>", "<|vision_end|>")
    assert m.llm["mrope_section"] == [2, 3, 3]


def test_vision_onnx_matches_the_tower_at_an_untraced_batch(qwen_bundle, hf_model):
    import onnxruntime as ort
    import torch

    bundle = load_bundle(qwen_bundle)
    pixels = np.random.default_rng(1).normal(size=(3, 3, TILE, TILE)).astype(np.float32)
    session = ort.InferenceSession(str(bundle.vision_path), providers=["CPUExecutionProvider"])
    tokens, pooled = session.run(["tokens", "pooled"], {"pixels": pixels})   # traced at 2
    patches, grid = qwen_patches(pixels)
    with torch.no_grad():
        ref = hf_model.model.get_image_features(pixel_values=torch.from_numpy(patches),
                                                image_grid_thw=torch.from_numpy(grid))
    ref = torch.stack(list(ref.pooler_output)).numpy()
    assert tokens.shape == (3, 36, 64)
    assert np.abs(tokens - ref).max() <= 1e-4
    assert np.array_equal(tokens, pooled)
    assert np.abs(tokens[0] - tokens[1]).max() > 1e-3


def test_thumbnail_positions_are_transformers_own(hf_model):
    import torch

    from rs_vqa_plugin.engine.mrope import sequence_positions

    image_id = hf_model.config.image_token_id
    ids = torch.tensor([[7, 8, 9] + [image_id] * 36 + [10, 11]])
    types = (ids == image_id).int()
    ref, _ = hf_model.model.get_rope_index(ids, types, torch.tensor([[1, 12, 12]]))
    ours = sequence_positions(3, 36, 0, None, 2)
    assert np.array_equal(ours, ref[:, 0].numpy())


def test_kept_tokens_keep_their_positions(engine):
    """A kept token has the same (t, h, w) in the RFM pass over the whole level and in the LLM's
    pruned sequence, and so has the text after the image."""
    from rs_vqa_plugin.engine.sequence import LevelTokens, assemble

    rows, cols = np.divmod(np.arange(24), 6)
    tokens = LevelTokens(2, np.random.default_rng(0).normal(size=(24, 64)).astype(np.float32),
                         rows, cols, rows // 6, cols // 6, (4, 6))
    pieces = dict(prefix=np.zeros((5, 64), np.float32), thumbnail=np.ones((36, 64), np.float32),
                  separator=engine.bundle.separator, newline=None,
                  suffix=np.zeros((4, 64), np.float32), positions="mrope")
    whole = assemble(tokens=tokens, **pieces)
    kept = [3, 9, 10, 23]
    pruned = assemble(tokens=tokens.subset(kept), **pieces)
    assert whole.newline_tokens == pruned.newline_tokens == 0
    assert np.array_equal(whole.positions[:, whole.hr_positions[kept]],
                          pruned.positions[:, pruned.hr_positions])
    assert np.array_equal(whole.positions[:, -4:], pruned.positions[:, -4:])
    start = 5 + 6 + 2       # prefix, thumbnail side, two separator tokens
    assert pruned.positions[:, pruned.hr_positions[0]].tolist() == [start, start + 0, start + 3]
    assert pruned.positions[:, -4].tolist() == [start + 6] * 3      # + max(4 rows, 6 cols)


def _hf_inputs(hf_model, qwen_dir, pixels_hwc, question):
    """transformers' own way in: the processor's patches, the chat template with an image part,
    one <|image_pad|> per merged token."""
    import torch
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil.from_pretrained(qwen_dir, do_resize=False)
    image = processor(images=[pixels_hwc], return_tensors="pt", input_data_format="channels_last")
    tokenizer = AutoTokenizer.from_pretrained(qwen_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    count = int(image["image_grid_thw"].prod()) // 4
    text = text.replace("<|image_pad|>", "<|image_pad|>" * count)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                pixel_values=image["pixel_values"].float(), image_grid_thw=image["image_grid_thw"],
                mm_token_type_ids=(ids == hf_model.config.image_token_id).int()), tokenizer


def test_thumbnail_mode_equals_transformers_generate(engine, hf_model, qwen_dir, tmp_path):
    import torch

    from rs_vqa_plugin.engine.pipeline import AskOptions
    from rs_vqa_plugin.engine.pyramid import plan_pyramid
    from rs_vqa_plugin.engine.raster import RasterSource
    from rs_vqa_plugin.engine.reader import PyramidReader
    from rs_vqa_plugin.engine.sequence import assemble

    raster = make_rgb_scene(tmp_path / "one_tile.tif", size=TILE, seed=3)
    m = engine.manifest
    with RasterSource(raster) as source:
        plan = plan_pyramid(source.width, source.height, tile_size=m.tile_size,
                            token_grid=m.pooled_grid, **m.plan_options())
        pixels, valid = PyramidReader(source, plan).read_thumbnail()
    assert pixels.shape == (TILE, TILE, 3) and valid.all()
    from osgeo import gdal

    stored = gdal.Open(str(raster)).ReadAsArray().transpose(1, 2, 0)
    assert np.array_equal(pixels, stored)        # one tile: the thumbnail is the raster itself

    # rs-vqa: vision.onnx, the prompt pieces, M-RoPE positions, the LLM from inputs_embeds.
    thumb = engine.vision.encode_thumbnail(pixels, valid).reshape(-1, m.hidden_size)
    prefix_ids, suffix_ids = engine.llm.prompt_segments(QUESTION)
    seq = assemble(engine.llm.embed_ids(prefix_ids), thumb, engine.bundle.separator, None, None,
                   engine.llm.embed_ids(suffix_ids), "mrope")
    with torch.no_grad():
        inputs = torch.from_numpy(seq.embeds)[None]
        ours, _ = engine.llm.prefill(inputs, positions=torch.from_numpy(seq.positions)[:, None])

    inputs, tokenizer = _hf_inputs(hf_model, qwen_dir, pixels, QUESTION)
    assert inputs["input_ids"][0].tolist() == prefix_ids + [
        hf_model.config.image_token_id] * 36 + suffix_ids
    with torch.no_grad():
        ref = hf_model(**inputs).logits[0, -1]
        generated = hf_model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.abs(ours[0, -1].float() - ref).max().item() <= 1e-4
    hf_text = tokenizer.decode(generated[0, inputs["input_ids"].shape[1]:],
                               skip_special_tokens=True).strip()
    answer = engine.ask(raster, QUESTION, AskOptions(mode="thumbnail", max_new_tokens=6))
    assert answer.text == hf_text
    assert answer.trace["thumbnail_tokens"] == 36 and answer.trace["kept_rows"] == 0


def test_rfm_scores_equal_the_llm_attention_row(engine, hf_model):
    import torch

    from rs_vqa_plugin.engine.sequence import LevelTokens, assemble

    rng = np.random.default_rng(4)
    rows, cols = np.divmod(np.arange(48), 8)
    tokens = LevelTokens(1, rng.normal(scale=0.5, size=(48, 64)).astype(np.float32), rows, cols,
                         rows // 6, cols // 6, (6, 8))
    seq = assemble(rng.normal(size=(7, 64)).astype(np.float32),
                   rng.normal(size=(36, 64)).astype(np.float32), engine.bundle.separator, None,
                   tokens, rng.normal(size=(9, 64)).astype(np.float32), "mrope")
    scores = engine.rfm.score(seq.embeds, seq.hr_mask, seq.query_index, positions=seq.positions)
    layer = engine.manifest.rfm["scoring_layer"]
    with torch.no_grad():
        out = hf_model.model.language_model(
            inputs_embeds=torch.from_numpy(seq.embeds)[None],
            position_ids=torch.from_numpy(seq.positions)[:, None], output_attentions=True)
    row = out.attentions[layer][0, :, seq.query_index].numpy() * seq.hr_mask[None]
    expected = (row / row.sum(axis=1, keepdims=True)).mean(axis=0)
    assert np.abs(scores - expected).max() <= 1e-4
    # The positions matter: 1D positions give other scores.
    flat = np.broadcast_to(np.arange(seq.length), (3, seq.length))
    other = engine.rfm.score(seq.embeds, seq.hr_mask, seq.query_index, positions=flat)
    assert np.abs(other - expected).max() > 1e-4


# ------------------------------------------------------------------ refusals
def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _edit_config(folder, edit):
    path = folder / "config.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_refuses_another_family(tmp_path, capsys):
    from rs_vqa_plugin.commands import main
    from rs_vqa_plugin.modeling.convert_qwen25 import convert_hf_qwen25

    src = tmp_path / "llava"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(BundleError, match=r"config.json is model_type 'llava'.*--from hf-llava"):
        convert_hf_qwen25(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert main(["convert", str(src), str(tmp_path / "out"), "--from", "hf-qwen2.5-vl"]) == 2
    assert "config.json is model_type 'llava'" in capsys.readouterr().err
    assert main(["convert", str(src), str(tmp_path / "out"), "--tile-size", "336"]) == 2
    assert "--tile-size applies to --from hf-qwen2.5-vl only" in capsys.readouterr().err


def test_refuses_a_video_only_config(qwen_dir, tmp_path):
    from rs_vqa_plugin.modeling.convert_qwen25 import convert_hf_qwen25

    src = _copy(qwen_dir, tmp_path / "video")
    _edit_config(src, lambda d: d.pop("image_token_id"))
    with pytest.raises(BundleError, match=r"no integer 'image_token_id' \(a video-only"):
        convert_hf_qwen25(src, tmp_path / "out")


def test_refuses_missing_special_tokens(qwen_dir, tmp_path):
    from tests.qwen25_models import QWEN_SPECIAL

    from rs_vqa_plugin.modeling.convert_qwen25 import convert_hf_qwen25

    src = tmp_path / "no-vision-start"
    cfg = TinyQwenConfig(text_layers=3, special_tokens=[t for t in QWEN_SPECIAL
                                                        if t != "<|vision_start|>"])
    write_tiny_qwen25(src, cfg)
    with pytest.raises(BundleError, match=r"tokenizer\.json\) has no special token "
                                          r"<\|vision_start\|> \(vision_start_token_id"):
        convert_hf_qwen25(src, tmp_path / "out")


def test_refuses_a_checkpoint_too_large_for_the_machine(qwen_dir, tmp_path):
    from rs_vqa_plugin.modeling.convert_qwen25 import convert_hf_qwen25

    with pytest.raises(InputError, match=r"safetensors weights are .* MB and converting them "
                                         r"needs about .* but 0\.5 MB is available"):
        convert_hf_qwen25(qwen_dir, tmp_path / "out", memory_limit_mb=0.5)


def test_refuses_a_tile_size_off_the_merge_grid(qwen_dir, tmp_path):
    from rs_vqa_plugin.modeling.convert_qwen25 import convert_hf_qwen25

    with pytest.raises(InputError, match="--tile-size 300 must be a positive multiple of 28"):
        convert_hf_qwen25(qwen_dir, tmp_path / "out", tile_size=300)


# ------------------------------------------------------------------ a foreign folder, end to end
@pytest.fixture(scope="module")
def foreign_bundle(tmp_path_factory):
    """A folder from a script that shares no code with the tests, converted by the CLI."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from rs_vqa_plugin.commands import main

    root = tmp_path_factory.mktemp("foreign")
    script = Path(__file__).parent / "fixtures" / "make_foreign_qwen25.py"
    env = dict(os.environ, PYTHONPATH="")          # nothing of rs-vqa importable
    subprocess.run([sys.executable, str(script), str(root / "src")], check=True, env=env,
                   cwd=root, capture_output=True)
    out = root / "bundle"
    assert main(["convert", str(root / "src"), str(out), "--from", "hf-qwen2.5-vl",
                 "--tile-size", "112", "--rfm-layers", "2,4"]) == 0
    return out


@pytest.mark.parametrize("mode", ["dip", "grid", "thumbnail"])
def test_foreign_folder_answers_on_geotiffs(foreign_bundle, mode, tmp_path):
    from rs_vqa_plugin.engine.pipeline import AskOptions, Engine

    bundle = load_bundle(foreign_bundle)
    m = bundle.manifest
    assert (m.tile_size, m.thumbnail_tokens, m.tokens_per_tile) == (112, 16, 16)
    assert m.rfm["copied_from"] == [1, 2, 4] and m.llm["dtype"] == "bfloat16"
    assert m.image_mean == [0.5, 0.5, 0.5]
    raster = make_rgb_scene(tmp_path / "scene.tif", size=(700, 460), seed=5)
    engine = Engine(foreign_bundle, device="cpu", tile_cache_mb=0)
    answer = engine.ask(raster, "how many ships are in the harbour?",
                        AskOptions(mode=mode, level=2, max_new_tokens=3))
    trace = answer.trace
    assert isinstance(answer.text, str) and trace["kept_rows"] == 0
    assert trace["thumbnail_tokens"] == 16
    if mode == "thumbnail":
        assert trace["llm_tokens"] == trace["text_tokens"] + 16
    else:
        # + the two separator tokens (<|vision_end|><|vision_start|>), no newlines
        assert trace["llm_tokens"] == trace["text_tokens"] + 16 + 2 + trace["kept_tokens"]
    if mode == "dip":
        assert len(trace["rfm_tokens"]) >= 1 and answer.heat_cells
    if mode == "grid":
        assert trace["levels"] == [2] and trace["kept_tokens"] > 16


def test_distill_works_on_a_qwen25_bundle(qwen_bundle, tmp_path):
    """distill builds M-RoPE samples (the teacher is the LLM's attention with the engine's
    positions), trains the M-RoPE RFM and writes a bundle whose rfm.onnx still takes positions."""
    import torch

    from rs_vqa_plugin.modeling.distill import DistillOptions, distill
    from rs_vqa_plugin.modeling.distill_data import Sample
    from rs_vqa_plugin.modeling.rfm_torch import RegionFocusTorch

    lines = []
    for n, size in enumerate(((400, 260), (300, 330))):
        make_rgb_scene(tmp_path / f"s{n}.tif", size=size, seed=n)
        for k, text in enumerate(("How many ships are there?", "What color is the roof?")):
            lines.append(json.dumps({"question_id": f"Q{n}{k}", "image": f"s{n}.tif",
                                     "text": text}))
    data = tmp_path / "questions.jsonl"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "distilled"
    distill(qwen_bundle, data, out, DistillOptions(steps=3, lr=1e-3, save_every=3,
                                                    heldout_fraction=0.25, device="cpu"))
    bundle = load_bundle(out)
    assert bundle.manifest.rfm["made"] != "copied"
    sample = Sample.load(sorted((out / "distill_state" / "samples" / "train").glob("*.npz"))[0])
    assert sample.positions.shape == (3, sample.embeds.shape[0])
    assert sample.positions[1].max() > sample.positions[0][sample.hr_mask].max()   # 2D image
    copied = RegionFocusTorch.load(load_bundle(qwen_bundle).rfm_weights_path)
    with torch.no_grad():
        rows = copied.forward_attention_rows(torch.from_numpy(sample.embeds), sample.query_index,
                                             torch.from_numpy(sample.positions))
    first = torch.softmax(rows[copied.config.layers[0]], dim=-1).numpy()
    np.testing.assert_allclose(first, sample.teacher[0], atol=1e-5)


def test_fp16_vision_export_keeps_float32_interface(hf_model, tmp_path):
    import onnxruntime as ort
    import torch

    from rs_vqa_plugin.modeling.export_vision import export_vision_onnx
    from rs_vqa_plugin.modeling.qwen25_vision import QwenVisionGraph

    graph = QwenVisionGraph(hf_model.model.visual, TILE).eval()
    path = export_vision_onnx(graph, tmp_path / "vision16.onnx", fp16=True)
    pixels = np.random.default_rng(6).normal(size=(3, 3, TILE, TILE)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tokens = session.run(["tokens"], {"pixels": pixels})[0]
    with torch.no_grad():
        ref = graph(torch.from_numpy(pixels))[0].numpy()
    assert tokens.dtype == np.float32
    assert np.abs(tokens - ref).max() <= 5e-3 * np.abs(ref).max()


def test_bundle_validation_names_the_position_scheme(qwen_bundle, tmp_path):
    bundle = _copy(qwen_bundle, tmp_path / "b")
    manifest = bundle / "manifest.json"
    data = json.loads(manifest.read_text())
    for value, message in (("1d", r"rfm.onnx takes M-RoPE position_ids but manifest.json says "
                                  r"positions '1d'"),
                           ("xyz", r"'positions' must be one of 1d, mrope")):
        manifest.write_text(json.dumps(dict(data, positions=value)))
        with pytest.raises(BundleError, match=message):
            load_bundle(bundle)
    manifest.write_text(json.dumps(dict(data, newline="every_row")))
    with pytest.raises(BundleError, match=r"'newline' must be one of per_row, none"):
        load_bundle(bundle)


def test_llm_prefill_chunks_and_cancel_with_positions(qwen_bundle):
    """Chunked prefill (eager attention) with M-RoPE positions equals one pass; a cancel stops
    the prefill inside the decoder layers of the image-text model."""
    import torch

    from rs_vqa_plugin.engine.errors import Cancelled
    from rs_vqa_plugin.engine.llm import LanguageModel
    from rs_vqa_plugin.engine.mrope import sequence_positions
    from rs_vqa_plugin.engine.progress import CancelToken

    llm = LanguageModel(load_bundle(qwen_bundle), device="cpu")
    assert llm.model.model.visual is None and len(llm.decoder_layers()) == 4
    llm.model.set_attn_implementation("eager")
    embeds = np.random.default_rng(8).normal(size=(50, 64)).astype(np.float32)
    positions = torch.from_numpy(sequence_positions(5, 36, 0, None, 9))[:, None]
    x = torch.from_numpy(embeds)[None]
    with torch.no_grad():
        whole, _ = llm.prefill(x, positions=positions, chunk=50)
        parts, cache = llm.prefill(x, positions=positions, chunk=7)
    assert torch.abs(whole - parts).max().item() <= 1e-4 and cache.get_seq_length() == 50
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        llm.generate(embeds, max_new_tokens=2, cancel=token, positions=positions[:, 0].numpy())
    with pytest.raises(InputError, match=r"M-RoPE positions must be \[3, 50\]"):
        llm.generate(embeds, max_new_tokens=2, positions=np.zeros((3, 49), np.int64))


def test_eval_cli_on_a_foreign_bundle(foreign_bundle, tmp_path, capsys):
    from rs_vqa_plugin.commands import main

    make_rgb_scene(tmp_path / "a.tif", size=(500, 300), seed=9)
    rows = [{"question_id": "FAIR_1", "image": "a.tif", "text": "how many ships are there?",
             "category": "count", "ground_truth": "two"},
            {"question_id": "FAIR_2", "image": "a.tif", "text": "what color is the car?",
             "category": "object color", "ground_truth": "red"}]
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = tmp_path / "answers.jsonl"
    assert main(["eval", str(questions), "--images", str(tmp_path), "--model",
                 str(foreign_bundle), "--device", "cpu", "--mode", "dip", "--max-new-tokens",
                 "2", "--answers", str(answers), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["subsets"]["FAIR"]["answered"] == 2
    assert len(answers.read_text().splitlines()) == 2


def test_llm_folder_holds_no_second_vision_tower(qwen_bundle):
    from safetensors import safe_open

    from rs_vqa_plugin.gui.models import check_bundle

    bundle = load_bundle(qwen_bundle)
    config = json.loads((bundle.llm_dir / "config.json").read_text())
    assert config["vision_config"]["depth"] == 0 and bundle.manifest.vision["depth"] == 3
    names = [n for p in bundle.llm_dir.glob("*.safetensors")
             for n in safe_open(str(p), framework="pt").keys()]
    assert not [n for n in names if "visual.blocks." in n]      # (saved in the hub's key layout)
    assert any("layers.0.self_attn.q_proj" in n for n in names)
    assert check_bundle(qwen_bundle) is None          # the dock's model picker offers it


def test_processing_ask_answers_with_a_qwen25_bundle(rs_vqa_provider, qwen_bundle,  # noqa: F811
                                                      tmp_path):
    """rs_vqa:ask in headless QGIS with such a bundle: answers and a heatmap."""
    from tests.test_processing import run, vector_layer

    scene = make_rgb_scene(tmp_path / "scene.tif", size=(500, 400), seed=11)
    result = run("rs_vqa:ask", {"INPUT": str(scene), "QUESTIONS": QUESTION,
                                "MODEL": str(qwen_bundle), "MODE": "dip", "MAX_TOKENS": 2,
                                "OUTPUT": str(tmp_path / "answers.gpkg"),
                                "HEATMAP": str(tmp_path / "heat.gpkg")})
    assert result["ANSWERED"] == 1
    row = next(vector_layer(result["OUTPUT"]).getFeatures())
    assert row["mode"] == "dip" and row["llm_vision_tokens"] > 36
    assert vector_layer(result["HEATMAP"]).featureCount() > 0


def test_refuses_weights_too_large_for_the_device(qwen_bundle, monkeypatch):
    """Loading refuses, with the figures, LLM weights above the device's free memory (the free
    memory is set small here: the test machine has more than the tiny model needs)."""
    from rs_vqa_plugin.engine import llm as llm_module
    from rs_vqa_plugin.engine.budget import check_weights_fit, weights_numel

    bundle = load_bundle(qwen_bundle)
    count = weights_numel(bundle.llm_dir)
    assert 50_000 < count < 1_000_000                    # the tiny decoder, no vision blocks
    check_weights_fit(bundle.llm_dir, 4, "cuda", count * 4 / 2 ** 20 + 0.01)
    with pytest.raises(InputError, match=r"llm needs about .* MB as 32-bit weights but the GPU "
                                         r"has 0\.1 MB free: choose a smaller dtype"):
        check_weights_fit(bundle.llm_dir, 4, "cuda", 0.1)
    monkeypatch.setattr(llm_module, "_free_mb", lambda device: 0.1)
    with pytest.raises(InputError, match=r"but this machine has 0\.1 MB free"):
        llm_module.LanguageModel(bundle, device="cpu")


def test_image_markers_must_be_tokens(qwen_bundle, tmp_path):
    from rs_vqa_plugin.engine.llm import LanguageModel

    bundle = _copy(qwen_bundle, tmp_path / "b")
    manifest = bundle / "manifest.json"
    data = json.loads(manifest.read_text())
    data["chat"]["image_start"] = "<|img_start|>"
    manifest.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"chat.image_start is '<\|img_start\|>', which is not a "
                                          "token of the tokenizer"):
        LanguageModel(load_bundle(bundle), device="cpu")
