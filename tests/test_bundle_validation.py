"""load_bundle refuses broken bundles with an error that names the file (issue 4)."""

from __future__ import annotations

import json
import shutil

import pytest

from rs_vqa_plugin.engine.bundle import FORMAT_VERSION, load_bundle
from rs_vqa_plugin.engine.errors import BundleError

pytest_plugins = ["tests.fixtures_models"]


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(tiny_bundle, target)
    return target


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _error(path) -> str:
    with pytest.raises(BundleError) as info:
        load_bundle(path)
    return str(info.value)


def test_good_bundle_loads(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    m = bundle.manifest
    assert m.format_version == FORMAT_VERSION
    assert (m.tile_size, m.patch_grid, m.pooled_grid, m.hidden_size) == (112, 8, 4, 64)
    assert m.tokens_per_tile == 16 and m.thumbnail_tokens == 64
    assert m.rfm["made"] == "copied" and m.rfm["copied_from"] == [0, 1, 2]
    assert "<image>" == m.chat["image_placeholder"] and m.chat["template"]
    assert bundle.newline.shape == bundle.separator.shape == (64,)
    assert bundle.rfm_weights_path is not None


@pytest.mark.parametrize("name", ["vision.onnx", "rfm.onnx", "embeddings.npz", "manifest.json"])
def test_missing_file(bundle_copy, name):
    (bundle_copy / name).unlink()
    assert name in _error(bundle_copy)


def test_newer_manifest_format(bundle_copy):
    _edit_json(bundle_copy / "manifest.json", format_version=FORMAT_VERSION + 1)
    message = _error(bundle_copy)
    assert "manifest.json" in message and "update the plugin" in message


@pytest.mark.parametrize("name", ["vision.onnx", "rfm.onnx"])
def test_corrupt_onnx(bundle_copy, name):
    path = bundle_copy / name
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 3])   # truncated download
    message = _error(bundle_copy)
    assert name in message and "not a readable ONNX model" in message


def test_mismatched_dims_name_the_vision_file(bundle_copy):
    # llm/ and manifest agree on 128, the exported vision encoder still gives 64-dim tokens.
    _edit_json(bundle_copy / "manifest.json", hidden_size=128)
    _edit_json(bundle_copy / "llm" / "config.json", hidden_size=128)
    message = _error(bundle_copy)
    assert "vision.onnx gives 64-dim tokens but llm/ expects hidden size 128" in message


def test_llm_config_disagrees_with_manifest(bundle_copy):
    _edit_json(bundle_copy / "llm" / "config.json", hidden_size=96)
    message = _error(bundle_copy)
    assert "config.json" in message and "96" in message


def test_wrong_tile_size(bundle_copy):
    _edit_json(bundle_copy / "manifest.json", tile_size=336)
    assert "vision.onnx takes pixels" in _error(bundle_copy)


def test_bad_embeddings(bundle_copy):
    import numpy as np

    np.savez(bundle_copy / "embeddings.npz", image_newline=np.zeros(32, np.float32),
             image_separator=np.zeros(64, np.float32))
    message = _error(bundle_copy)
    assert "embeddings.npz" in message and "image_newline" in message


def test_pickle_only_weights_refused(bundle_copy):
    import torch
    from safetensors.torch import load_file

    llm = bundle_copy / "llm"
    torch.save(load_file(llm / "model.safetensors"), llm / "pytorch_model.bin")
    (llm / "model.safetensors").unlink()
    message = _error(bundle_copy)
    assert "pytorch_model.bin" in message and "pickle" in message


def test_missing_tokenizer(bundle_copy):
    (bundle_copy / "llm" / "tokenizer.json").unlink()
    message = _error(bundle_copy)
    assert "tokenizer.json" in message and "no tokenizer" in message


def test_rfm_layers_beyond_llm_depth(bundle_copy):
    data = json.loads((bundle_copy / "manifest.json").read_text())
    data["rfm"]["layers"] = [1, 9]
    (bundle_copy / "manifest.json").write_text(json.dumps(data))
    assert "RFM layers [1, 9]" in _error(bundle_copy)


def test_not_a_bundle(tmp_path):
    assert "manifest.json is missing" in _error(tmp_path)
    assert "does not exist" in _error(tmp_path / "nope")


# ---- values the engine cannot use are found at load time, naming manifest.json and the key
@pytest.mark.parametrize("key, value", [
    ("alpha", 0), ("alpha", 2), ("alpha", "0.25"), ("tile_size", "112"), ("tile_size", 0),
    ("image_std", [0.27, 0.0, 0.28]), ("image_std", [0.27, 0.26]), ("image_mean", "grey"),
    ("n_max", -1), ("n_max", 2.5), ("hidden_size", True), ("patch_grid", -8),
    ("thumbnail_size", None), ("rfm", [1, 2]), ("chat", "chatml"), ("tokens_per_tile", 15),
])
def test_bad_manifest_values_name_the_key(bundle_copy, key, value):
    _edit_json(bundle_copy / "manifest.json", **{key: value})
    message = _error(bundle_copy)
    assert "manifest.json" in message and f"'{key}'" in message and repr(value) in message


@pytest.mark.parametrize("key, value", [("template", 5), ("stop_tokens", "<|im_end|>")])
def test_bad_chat_values_name_the_key(bundle_copy, key, value):
    data = json.loads((bundle_copy / "manifest.json").read_text())
    data["chat"][key] = value
    (bundle_copy / "manifest.json").write_text(json.dumps(data))
    message = _error(bundle_copy)
    assert "manifest.json" in message and f"'chat.{key}'" in message


def test_format_version_below_one(bundle_copy):
    _edit_json(bundle_copy / "manifest.json", format_version=0)
    assert "'format_version'" in _error(bundle_copy)


@pytest.mark.parametrize("size", [0, 7, 100, -1000, -1])
def test_truncated_llm_weights(bundle_copy, size):
    weights = bundle_copy / "llm" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:size] if size >= 0 else data[:size])
    message = _error(bundle_copy)
    assert "llm/model.safetensors" in message and "truncated" in message


def test_integer_embeddings_refused(bundle_copy):
    import numpy as np

    np.savez(bundle_copy / "embeddings.npz", image_newline=np.zeros(64, np.int64),
             image_separator=np.zeros(64, np.float32))
    message = _error(bundle_copy)
    assert "embeddings.npz" in message and "int64" in message


def test_vision_onnx_with_double_pixels_refused(bundle_copy):
    import onnx

    path = bundle_copy / "vision.onnx"
    model = onnx.load(str(path), load_external_data=False)
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    onnx.save(model, str(path))
    message = _error(bundle_copy)
    assert "vision.onnx" in message and "'pixels'" in message and "double" in message


# ---- what only the libraries can find says which file is at fault, never a traceback
def _load_error(path) -> str:
    from rs_vqa_plugin.engine.pipeline import Engine

    with pytest.raises(BundleError) as info:
        Engine(path, device="cpu")
    return str(info.value)


def test_unknown_model_type_never_advises_remote_code(bundle_copy):
    _edit_json(bundle_copy / "llm" / "config.json", model_type="florbnet")
    message = _load_error(bundle_copy)
    assert "llm/config.json" in message and "'florbnet'" in message
    assert "trust_remote_code" not in message


def test_chat_template_that_cannot_render_fails_the_load(bundle_copy):
    data = json.loads((bundle_copy / "manifest.json").read_text())
    data["chat"]["template"] = "{{ raise_exception('no system role here') }}"
    (bundle_copy / "manifest.json").write_text(json.dumps(data))
    message = _load_error(bundle_copy)
    assert "manifest.json (chat.template)" in message and "no system role here" in message


def test_unreadable_tokenizer_names_it(bundle_copy):
    (bundle_copy / "llm" / "tokenizer.json").write_text('{"version": "1.0"}')
    message = _load_error(bundle_copy)
    assert "tokenizer" in message and "llm" in message


def test_onnx_runtime_refusal_names_the_file(bundle_copy):
    import onnx

    # A graph onnx reads but ONNX Runtime refuses: an operator that does not exist.
    path = bundle_copy / "rfm.onnx"
    model = onnx.load(str(path), load_external_data=False)
    model.graph.node[0].op_type = "NoSuchOperator"
    onnx.save(model, str(path))
    message = _load_error(bundle_copy)
    assert "rfm.onnx" in message and "ONNX Runtime cannot load" in message
