"""convert -> load -> run, the LLM runner (prompt, streaming, cancel) and the CLI (issue 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rs_vqa_plugin.commands import main
from rs_vqa_plugin.engine.bundle import load_bundle
from rs_vqa_plugin.engine.errors import Cancelled
from rs_vqa_plugin.engine.progress import CancelToken

pytest_plugins = ["tests.fixtures_models"]


@pytest.fixture(scope="module")
def llm(tiny_bundle):
    from rs_vqa_plugin.engine.llm import LanguageModel

    return LanguageModel(load_bundle(tiny_bundle), device="cpu")


def test_convert_cli_round_trip(tiny_llava_dir, tmp_path, capsys):
    import torch
    from transformers import LlavaForConditionalGeneration

    from rs_vqa_plugin.engine.llm import LanguageModel
    from rs_vqa_plugin.engine.rfm import RegionFocus
    from rs_vqa_plugin.engine.vision import VisionEncoder

    out = tmp_path / "converted"
    assert main(["convert", str(tiny_llava_dir), str(out), "--rfm-layers", "1,3"]) == 0
    assert main(["convert", str(tiny_llava_dir), str(out)]) == 2          # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
    bundle = load_bundle(out)
    m = bundle.manifest
    assert m.rfm["layers"] == [1, 3] and m.rfm["copied_from"] == [0, 1, 3]
    assert not list(out.parent.glob(".converted.partial*"))               # nothing half-written

    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, size=(2, m.tile_size, m.tile_size, 3), dtype=np.uint8)
    vision = VisionEncoder(bundle, device="cpu")
    thumb = vision.encode_thumbnail(tiles[0]).reshape(-1, m.hidden_size)
    hr_tokens = vision.encode_tiles(tiles).reshape(-1, m.hidden_size)
    lm = LanguageModel(bundle, device="cpu")
    prefix, suffix = lm.prompt_segments("How many ships are there?")
    parts = [lm.embed_ids(prefix), thumb, bundle.separator[None], hr_tokens, lm.embed_ids(suffix)]
    embeds = np.concatenate(parts).astype(np.float32)
    hr = np.zeros(len(embeds), dtype=bool)
    start = len(prefix) + len(thumb) + 1
    hr[start:start + len(hr_tokens)] = True
    scores = RegionFocus(bundle, device="cpu").score(embeds, hr, len(embeds) - 1)
    assert abs(scores.sum() - 1) < 1e-5 and scores[hr].min() > 0

    # The bundle's LLM is the LLaVA's own: same logits on the same embedding sequence.
    llava = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, dtype=torch.float32)
    with torch.no_grad():
        x = torch.from_numpy(embeds)[None]
        ref = llava(inputs_embeds=x).logits
        ours = lm.model(inputs_embeds=x).logits
    assert torch.abs(ref - ours).max() <= 1e-4
    assert np.allclose(lm.embed_ids(prefix),
                       llava.get_input_embeddings().weight[prefix].detach().numpy())


def test_prompt_segments_place_image_in_first_user_turn(llm):
    prefix, suffix = llm.prompt_segments("Is it a harbour?", history=[("What is this?", "a port")])
    tok = llm.tokenizer
    prefix_text, suffix_text = tok.decode(prefix), tok.decode(suffix)
    assert prefix_text.startswith("<|im_start|>system\nYou are a helpful assistant.")
    assert prefix_text.endswith("<|im_start|>user\n")
    assert suffix_text.startswith("\nWhat is this?<|im_end|>")
    assert "a port" in suffix_text and suffix_text.endswith("<|im_start|>assistant\n")
    assert tok.decode(suffix[-1:]) == "\n"                     # the query token
    # A placeholder typed by the user does not open a second image slot.
    prefix2, suffix2 = llm.prompt_segments("what is <image> here")
    assert "<image>" not in tok.decode(suffix2)


def test_generate_is_greedy_streams_and_stops(llm):
    import torch

    rng = np.random.default_rng(3)
    embeds = rng.normal(scale=0.3, size=(20, llm.hidden_size)).astype(np.float32)
    pieces = []
    text = llm.generate(embeds, max_new_tokens=6, on_token=pieces.append)
    assert "".join(pieces) == text
    with torch.no_grad():
        ref = llm.model.generate(inputs_embeds=torch.from_numpy(embeds)[None], max_new_tokens=6,
                                 do_sample=False, eos_token_id=sorted(llm.stop_ids),
                                 pad_token_id=llm.tokenizer.pad_token_id)
    ref_ids = [int(t) for t in ref[0] if int(t) not in llm.stop_ids]
    assert text == llm.tokenizer.decode(ref_ids, skip_special_tokens=True)
    assert llm.generate(embeds, max_new_tokens=0) == ""


def test_generate_cancels_between_tokens(llm):
    cancel = CancelToken()
    seen = []

    def on_token(piece):
        seen.append(piece)
        cancel.cancel()

    embeds = np.random.default_rng(4).normal(size=(10, llm.hidden_size)).astype(np.float32)
    with pytest.raises(Cancelled):
        llm.generate(embeds, max_new_tokens=20, on_token=on_token, cancel=cancel)
    assert len(seen) <= 1


def test_tiny_model_cli(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["tiny-model", str(out), "--seed", "2", "--tile-size", "56", "--layers", "3"]) == 0
    bundle = load_bundle(out)
    m = bundle.manifest
    assert (m.tile_size, m.patch_grid, m.pooled_grid) == (56, 4, 2)
    assert m.provenance["seed"] == 2 and m.rfm["layers"] == [1, 2]
    assert json.loads((out / "llm" / "config.json").read_text())["num_hidden_layers"] == 3
    assert main(["tiny-model", str(tmp_path / "bad"), "--tile-size", "50"]) == 2
    assert "multiple of --patch-size" in capsys.readouterr().err


def test_convert_refuses_bad_sources(tiny_llava_dir, tmp_path, capsys):
    import shutil

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["convert", str(empty), str(tmp_path / "a")]) == 2
    assert "config.json is missing" in capsys.readouterr().err

    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert main(["convert", str(bert), str(tmp_path / "b")]) == 2
    assert "model_type 'bert'" in capsys.readouterr().err

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_llava_dir, pickled)
    for weights in pickled.glob("*.safetensors"):
        weights.rename(weights.with_name("pytorch_model.bin"))
    assert main(["convert", str(pickled), str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "pytorch_model.bin" in err and "pickle" in err
    assert not (tmp_path / "c").exists()

    assert main(["convert", str(tiny_llava_dir), str(tmp_path / "d"), "--rfm-layers", "2,7"]) == 2
    assert "does not exist: the LLM has 4 layers" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and not list(tmp_path.glob(".d.partial*"))


def test_tiny_model_refuses_existing_folder_before_work(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["tiny-model", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_streaming_holds_back_split_characters(llm):
    """Byte-level tokens can split one character: pieces never carry a half character."""
    ids = llm.tokenizer("Ödön's café", add_special_tokens=False)["input_ids"]
    assert len(ids) > len("Ödön's café") // 2                   # really split into byte tokens
    pieces, emitted = [], ""
    for n in range(1, len(ids) + 1):
        emitted = llm._stream(ids[:n], emitted, pieces.append)
    assert "".join(pieces) == "Ödön's café"
    assert not any("\ufffd" in piece for piece in pieces)
