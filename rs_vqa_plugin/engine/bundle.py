"""The model bundle (models/<name>/): manifest schema and a loader that validates before heavy work.

Layout: manifest.json, vision.onnx, rfm.onnx (+ rfm.safetensors, the trainable RFM weights),
llm/ (transformers causal-LM folder + tokenizer, safetensors only), embeddings.npz
(image_newline [D], image_separator [D] or [S, D]). ONNX weights above a size limit sit in
`<file>.data`.

Families with multimodal rotary positions (positions "mrope", Qwen2.5-VL) keep in llm/ the
transformers image-text model with its vision tower cut to zero blocks (vision.onnx has it) and
take explicit positions: rfm.onnx has a `position_ids` [3, L] input (engine/mrope.py).

An RFM trained with image positions (RFMConfig.image_xy, the default model's focus stage) has an
`image_xy` [L, 2] input: each HR token's normalised centre (x, y) in the image asked about, 0 for
other tokens (select.image_xy); the engine feeds it whenever the graph has that input."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from .errors import BundleError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VISION_ONNX = "vision.onnx"
RFM_ONNX = "rfm.onnx"
RFM_WEIGHTS = "rfm.safetensors"
LLM_DIR = "llm"
EMBEDDINGS = "embeddings.npz"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass
class Manifest:
    """manifest.json. Sizes: tile B = tile_size, G = patch_grid (thumbnail tokens G*G), g =
    pooled_grid (tokens per pyramid tile g*g), D = hidden_size (LLM width)."""
    format_version: int
    family: str                       # LLM family: 'qwen2' | 'llama' | 'mistral'
    tile_size: int
    patch_size: int
    patch_grid: int
    pooled_grid: int
    hidden_size: int
    image_mean: List[float]
    image_std: List[float]
    thumbnail_size: int
    newline: str = "per_row"          # one image_newline embedding after each token row; "none"
    separator: str = "learned"        # image_separator between thumbnail and HR tokens
    positions: str = "1d"             # "1d": 0..L-1; "mrope": (t, h, w) per token (mrope.py)
    alpha: float = 0.25
    n_max: int = 80
    rfm: Dict[str, Any] = field(default_factory=dict)
    chat: Dict[str, Any] = field(default_factory=dict)
    provenance: Dict[str, Any] = field(default_factory=dict)
    licence: str = "unknown"
    name: str = ""
    tokens_per_tile: int = 0          # g*g
    thumbnail_tokens: int = 0         # G*G
    vision: Dict[str, Any] = field(default_factory=dict)
    llm: Dict[str, Any] = field(default_factory=dict)
    embeddings: Dict[str, Any] = field(default_factory=dict)
    # Geometry choices where the paper's released code and ours differ (METHOD.md §2, §5):
    # {"unpad": "ceil" | "floor", "skip_equal_grids": bool}; {"keep_rounding": "ceil" | "floor"}.
    # Converted reference checkpoints get the reference's ("floor"); absent keys mean ours.
    pyramid: Dict[str, Any] = field(default_factory=dict)
    selection: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)   # unknown keys, kept on rewrite

    def __post_init__(self):
        self.tokens_per_tile = self.tokens_per_tile or self.pooled_grid ** 2
        self.thumbnail_tokens = self.thumbnail_tokens or self.patch_grid ** 2

    def plan_options(self) -> Dict[str, Any]:
        """Keyword arguments of engine.pyramid.plan_pyramid for this bundle."""
        return {"unpad": str(self.pyramid.get("unpad", "ceil")),
                "skip_equal_grids": bool(self.pyramid.get("skip_equal_grids", True))}

    @property
    def keep_rounding(self) -> str:
        """How top-alpha counts the kept tokens: ceil(alpha N) (ours) or int(alpha N) (reference)."""
        return str(self.selection.get("keep_rounding", "ceil"))

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("pyramid", "selection"):   # absent unless set: older readers stay happy
            if not data[key]:
                del data[key]
        data.update(data.pop("extra"))
        return data

    @classmethod
    def from_dict(cls, data: dict, source: str = MANIFEST) -> "Manifest":
        names = {f.name for f in fields(cls)}
        required = ["format_version", "family", "tile_size", "patch_size", "patch_grid",
                    "pooled_grid", "hidden_size", "image_mean", "image_std", "thumbnail_size"]
        missing = [k for k in required if k not in data]
        if missing:
            raise BundleError(f"{source} lacks {', '.join(missing)}: the bundle is incomplete; "
                              "re-create it with `python -m rs_vqa_plugin convert`.")
        check_manifest_values(data, source)
        known = {k: v for k, v in data.items() if k in names and k != "extra"}
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(**known, extra=extra)

    def write(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n",
                              encoding="utf-8")


# ------------------------------------------------------------------ manifest values
POSITIVE_INTS = ("tile_size", "patch_size", "patch_grid", "pooled_grid", "hidden_size",
                 "thumbnail_size", "n_max")
OBJECTS = ("rfm", "chat", "provenance", "vision", "llm", "embeddings", "pyramid", "selection")
CHAT_TEXTS = ("template", "system_prompt", "image_placeholder", "user_turn", "question_text",
              "image_start", "image_end")
NEWLINES = ("per_row", "none")
POSITIONS = ("1d", "mrope")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_manifest_values(data: dict, source: str = MANIFEST) -> None:
    """Refuse values the engine cannot use, at load time and naming the key, instead of a
    traceback (or a silently wrong answer) in the middle of a question."""
    def bad(key: str, wanted: str) -> BundleError:
        return BundleError(f"{source}: '{key}' must be {wanted}, but it is {data[key]!r}: correct "
                           "it, or re-create the bundle with `python -m rs_vqa_plugin convert`.")

    for key in POSITIVE_INTS:
        if key in data and not (_is_int(data[key]) and data[key] >= 1):
            raise bad(key, "a whole number of at least 1")
    for key, count in (("tokens_per_tile", "pooled_grid"), ("thumbnail_tokens", "patch_grid")):
        if data.get(key) and data[key] != data[count] ** 2:
            raise bad(key, f"{count} squared ({data[count] ** 2}) or absent")
    if "alpha" in data and not (_is_number(data["alpha"]) and 0.0 < data["alpha"] <= 1.0):
        raise bad("alpha", "a keep ratio above 0 and at most 1 (the paper uses 0.25)")
    for key in ("image_mean", "image_std"):
        value = data[key]
        if not (isinstance(value, list) and len(value) == 3 and all(map(_is_number, value))):
            raise bad(key, "a list of three numbers (R, G, B)")
    if not all(v > 0 for v in data["image_std"]):
        raise bad("image_std", "three numbers above 0 (pixels are divided by them)")
    for key in ("family", "newline", "separator", "positions", "licence", "name"):
        if key in data and not isinstance(data[key], str):
            raise bad(key, "a string")
    for key in OBJECTS:
        if key in data and not isinstance(data[key], dict):
            raise bad(key, "a JSON object")
    for key, allowed in (("newline", NEWLINES), ("positions", POSITIONS)):
        if key in data and data[key] not in allowed:
            raise bad(key, f"one of {', '.join(allowed)}")
    layers = (data.get("rfm") or {}).get("layers")
    if layers is not None and not (isinstance(layers, list) and all(
            _is_int(v) and v >= 0 for v in layers)):
        raise BundleError(f"{source}: 'rfm.layers' must be a list of layer numbers (0 or more), "
                          f"but it is {layers!r}: re-create the bundle.")
    chat = data.get("chat") or {}
    for key in CHAT_TEXTS:
        if chat.get(key) is not None and not isinstance(chat[key], str):
            raise BundleError(f"{source}: 'chat.{key}' must be a string (or absent), but it is "
                              f"{chat[key]!r}: correct it, or re-create the bundle.")
    stops = chat.get("stop_tokens")
    if stops is not None and not (isinstance(stops, list) and all(isinstance(t, str) for t in stops)):
        raise BundleError(f"{source}: 'chat.stop_tokens' must be a list of strings, but it is "
                          f"{stops!r}: correct it, or re-create the bundle.")


@dataclass
class Bundle:
    root: Path
    manifest: Manifest
    vision_path: Path
    rfm_path: Path
    llm_dir: Path
    newline: np.ndarray           # [D] float32
    separator: np.ndarray         # [D] or [S, D] float32
    rfm_weights_path: Optional[Path] = None   # rfm.safetensors when present (re-training)
    llm_config: Dict[str, Any] = field(default_factory=dict)

    @property
    def newline_embedding(self) -> Optional[np.ndarray]:
        """The newline after each token row, or None where the family has none."""
        return None if self.manifest.newline == "none" else self.newline


def read_manifest(root) -> Manifest:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path} is missing: {root} is not a model bundle (make one with "
                          "`python -m rs_vqa_plugin convert` or `tiny-model`).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path} must hold a JSON object.")
    version = data.get("format_version")
    if not _is_int(version) or version < 1:
        raise BundleError(f"{path}: 'format_version' must be a whole number of at least 1, but "
                          f"it is {version!r}: re-create the bundle.")
    if version > FORMAT_VERSION:
        raise BundleError(f"{path} is bundle format {version}; this plugin reads format "
                          f"{FORMAT_VERSION} at most: update the plugin, or re-convert the model.")
    return Manifest.from_dict(data, source=str(path))


def load_bundle(path) -> Bundle:
    """Open and validate a bundle cheaply (no model weights loaded). Raises BundleError naming the
    file that is missing or inconsistent."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise BundleError(f"Model folder {root} does not exist.")
    manifest = read_manifest(root)
    D = manifest.hidden_size
    for name in (VISION_ONNX, RFM_ONNX, EMBEDDINGS):
        if not (root / name).is_file():
            raise BundleError(f"{root / name} is missing: the bundle is incomplete; re-create it.")
    llm_config = _check_llm_dir(root / LLM_DIR, D)
    _check_vision(root / VISION_ONNX, manifest)
    _check_rfm(root / RFM_ONNX, D, manifest.positions)
    _check_rfm_layers(root / MANIFEST, manifest, llm_config)
    _check_geometry(root / MANIFEST, manifest)
    newline, separator = _read_embeddings(root / EMBEDDINGS, D)
    weights = root / RFM_WEIGHTS
    return Bundle(root=root, manifest=manifest, vision_path=root / VISION_ONNX,
                  rfm_path=root / RFM_ONNX, llm_dir=root / LLM_DIR, newline=newline,
                  separator=separator, rfm_weights_path=weights if weights.is_file() else None,
                  llm_config=llm_config)


# ------------------------------------------------------------------ checks
def _llm_hidden_size(config: dict) -> Optional[int]:
    if "hidden_size" in config:
        return int(config["hidden_size"])
    text = config.get("text_config") or {}
    return int(text["hidden_size"]) if "hidden_size" in text else None


def read_llm_config(llm_dir: Path) -> dict:
    config_path = Path(llm_dir) / "config.json"
    if not config_path.is_file():
        raise BundleError(f"{config_path} is missing: llm/ is not a transformers model folder.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{config_path} is not valid JSON ({exc}).") from exc
    if not isinstance(config, dict):
        raise BundleError(f"{config_path} must hold a JSON object.")
    return config


def context_tokens(manifest: Manifest, llm_config: dict) -> int:
    """How many tokens the LLM reads at most: the length the model was trained at when the bundle
    records it (a converted checkpoint's tokenizer_model_max_length; positions beyond it were
    never seen in training), else the config's max_position_embeddings, else 4096."""
    text = llm_config.get("text_config") or {}
    for value in (manifest.llm.get("max_context"), llm_config.get("max_position_embeddings"),
                  text.get("max_position_embeddings")):
        if _is_int(value) and value > 0:
            return int(value)
    return 4096


def _check_safetensors(path: Path) -> None:
    """The header must parse and the tensors it lists must fit the file: a truncated copy is
    found here, with the file named, not as a safetensors traceback when the weights load."""
    size = path.stat().st_size
    damaged = (f"{path} is damaged or truncated ({size} bytes): copy the bundle again or "
               "re-create it with `python -m rs_vqa_plugin convert`.")
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise BundleError(damaged)
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            raise BundleError(damaged)
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
            ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise BundleError(damaged) from None
    if 8 + length + max(ends, default=0) != size:
        raise BundleError(damaged)


def _check_llm_dir(llm_dir: Path, hidden: int) -> dict:
    if not llm_dir.is_dir():
        raise BundleError(f"{llm_dir} is missing: the bundle has no language model folder.")
    config_path = llm_dir / "config.json"
    config = read_llm_config(llm_dir)
    weights = sorted(llm_dir.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in llm_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise BundleError(f"{llm_dir / pickles[0]}: the LLM weights are pickle files, which "
                              "can run arbitrary code when loaded and are refused. Convert them "
                              "to safetensors (re-run `convert` on the source model).")
        raise BundleError(f"{llm_dir} has no *.safetensors weights.")
    for path in weights:
        _check_safetensors(path)
    if not any((llm_dir / name).is_file() for name in TOKENIZER_FILES):
        raise BundleError(f"{llm_dir / TOKENIZER_FILES[0]} is missing: llm/ has no tokenizer "
                          "(tokenizer.json or tokenizer.model); re-create the bundle.")
    llm_hidden = _llm_hidden_size(config)
    if llm_hidden is not None and llm_hidden != hidden:
        raise BundleError(f"{config_path} expects hidden size {llm_hidden} but manifest.json "
                          f"says {hidden}: the bundle mixes parts of different models.")
    return config


def _onnx_model(path: Path):
    try:
        import onnx
    except ImportError as exc:  # the runtime itself would also be missing
        from .errors import RuntimeSetupError
        from ..setup_advice import runtime_setup_advice
        raise RuntimeSetupError("The onnx package is not installed in this Python: "
                                f"{runtime_setup_advice()}.") from exc
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise BundleError(f"{path} is not a readable ONNX model ({type(exc).__name__}): the file "
                          "is damaged or truncated; re-create the bundle.") from exc
    if not model.graph.node:
        raise BundleError(f"{path} is not a readable ONNX model (empty graph); re-create it.")
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location" and not (path.parent / entry.value).is_file():
                raise BundleError(f"{path.parent / entry.value} is missing: {path.name} keeps "
                                  "its weights there.")
    return model


def _dims(value_info) -> List[Any]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _io(model, path: Path, kind: str, names: List[str]) -> Dict[str, List[Any]]:
    items = {v.name: _dims(v) for v in (model.graph.input if kind == "input"
                                        else model.graph.output)}
    for name in names:
        if name not in items:
            raise BundleError(f"{path} has no {kind} named '{name}' (it has "
                              f"{', '.join(items) or 'none'}): not an rs-vqa {path.name}.")
    return items


def _check_vision(path: Path, m: Manifest) -> None:
    model = _onnx_model(path)
    inputs = _io(model, path, "input", ["pixels"])
    outputs = _io(model, path, "output", ["tokens", "pooled"])
    pixels = inputs["pixels"]
    _check_float_io(model, path)
    if len(pixels) != 4 or pixels[1:] != [3, m.tile_size, m.tile_size]:
        raise BundleError(f"{path} takes pixels {pixels} but manifest.json says tiles of "
                          f"{m.tile_size} px ([N, 3, {m.tile_size}, {m.tile_size}]).")
    for name, count in (("tokens", m.patch_grid ** 2), ("pooled", m.pooled_grid ** 2)):
        dims = outputs[name]
        if len(dims) != 3:
            raise BundleError(f"{path} output '{name}' has shape {dims}, expected [N, T, D].")
        if dims[2] != m.hidden_size:
            raise BundleError(f"{path} gives {dims[2]}-dim tokens but llm/ expects hidden size "
                              f"{m.hidden_size}: the vision encoder belongs to another model.")
        if dims[1] != count:
            raise BundleError(f"{path} output '{name}' has {dims[1]} tokens per tile but "
                              f"manifest.json implies {count}.")


def _check_float_io(model, path: Path) -> None:
    """Our inputs and outputs are float32 tensors, except the RFM's mask and query index."""
    import onnx

    integer_ok = {"hr_mask", "query_index", "position_ids"}
    for value in list(model.graph.input) + list(model.graph.output):
        kind = value.type.tensor_type.elem_type
        if value.name not in integer_ok and kind != onnx.TensorProto.FLOAT:
            raise BundleError(f"{path} declares '{value.name}' as "
                              f"{onnx.TensorProto.DataType.Name(kind).lower()}, not float32: not "
                              f"an rs-vqa {path.name}; re-create the bundle.")


def _check_rfm(path: Path, hidden: int, positions: str = "1d") -> None:
    model = _onnx_model(path)
    _check_float_io(model, path)
    names = ["inputs_embeds", "hr_mask", "query_index"]
    inputs = _io(model, path, "input", names + (["position_ids"] if positions == "mrope" else []))
    if positions != "mrope" and "position_ids" in inputs:
        raise BundleError(f"{path} takes M-RoPE position_ids but manifest.json says positions "
                          f"{positions!r}: the RFM belongs to another model; re-create the bundle.")
    _io(model, path, "output", ["scores"])
    dims = inputs["inputs_embeds"]
    if len(dims) != 3 or dims[2] != hidden:
        raise BundleError(f"{path} takes {dims[-1] if dims else '?'}-dim embeddings but llm/ "
                          f"expects hidden size {hidden}: the RFM belongs to another model.")


def _check_rfm_layers(manifest_path: Path, m: Manifest, llm_config: dict) -> None:
    layers = m.rfm.get("layers") or []
    depth = llm_config.get("num_hidden_layers") or (llm_config.get("text_config") or {}).get(
        "num_hidden_layers")
    if depth and layers and max(layers) >= depth:
        raise BundleError(f"{manifest_path} lists RFM layers {layers} but llm/ has only "
                          f"{depth} layers.")


def _check_geometry(manifest_path: Path, m: Manifest) -> None:
    choices = (("pyramid", "unpad", m.pyramid.get("unpad", "ceil"), ("ceil", "floor")),
               ("selection", "keep_rounding", m.keep_rounding, ("ceil", "floor")),
               ("chat", "question_text", m.chat.get("question_text", "normalised"),
                ("normalised", "verbatim")))
    for section, key, value, allowed in choices:
        if value not in allowed:
            raise BundleError(f"{manifest_path}: {section}.{key} is {value!r}; it must be one of "
                              f"{', '.join(allowed)}.")
    from .errors import InputError
    from .selection import Selection

    try:
        Selection.parse(m.selection or "paper", f"{manifest_path}: selection")
    except InputError as exc:
        raise BundleError(str(exc)) from None
    limit = m.llm.get("max_context")
    if limit is not None and not (_is_int(limit) and limit >= 1):
        raise BundleError(f"{manifest_path}: llm.max_context is {limit!r}; it must be a positive "
                          "integer (the context length the model was trained at).")


def _read_embeddings(path: Path, hidden: int):
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except Exception as exc:
        raise BundleError(f"{path} is not a readable .npz of arrays ({exc}).") from exc
    out = []
    for key in ("image_newline", "image_separator"):
        if key not in arrays:
            raise BundleError(f"{path} lacks '{key}'; re-create the bundle.")
        if not np.issubdtype(arrays[key].dtype, np.floating):
            raise BundleError(f"{path} '{key}' holds {arrays[key].dtype} values, not floating "
                              "point embeddings; re-create the bundle.")
        arrays[key] = arrays[key].astype(np.float32)
        several = key == "image_separator" and arrays[key].ndim == 2 and arrays[key].shape[0] >= 1
        if arrays[key].shape != (hidden,) and not (several and arrays[key].shape[1] == hidden):
            raise BundleError(f"{path} '{key}' has shape {arrays[key].shape} but llm/ expects "
                              f"hidden size {hidden}.")
        out.append(arrays[key])
    return out[0], out[1]
