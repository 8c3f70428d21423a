"""Write a model bundle atomically: parts go into a hidden partial folder, renamed when validated.

Shared by the converters (HF LLaVA, released LRS-VQA checkpoints) and by distillation, which
replaces the RFM of an existing bundle (replace_rfm)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np

from ..engine import bundle as B
from ..engine.errors import BundleError


def check_target(out_dir, overwrite: bool = False) -> Path:
    """The resolved output folder; refuses a non-empty one unless overwrite (call it early, before
    slow work)."""
    final = Path(out_dir).expanduser().resolve()
    if final.exists() and (not final.is_dir() or any(final.iterdir())) and not overwrite:
        raise BundleError(f"{final} already exists and is not empty: choose another output "
                          "folder or pass --overwrite.")
    return final


class BundleWriter:
    """with BundleWriter(out) as w: w.save_llm(...); w.save_rfm(...); ...; w.finish(manifest)."""

    def __init__(self, out_dir, overwrite: bool = False):
        self.final = check_target(out_dir, overwrite)
        self.overwrite = overwrite
        self.dir = self.final.parent / f".{self.final.name}.partial-{os.getpid()}"
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.finished = False

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.finished:
            self.abort()

    def path(self, name: str) -> Path:
        return self.dir / name

    def save_llm(self, causal_lm, tokenizer) -> Path:
        """llm/: config + safetensors weights + tokenizer (never pickle)."""
        target = self.dir / B.LLM_DIR
        causal_lm.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        pickles = [p.name for p in target.iterdir() if p.suffix in B.PICKLE_SUFFIXES]
        if pickles:
            raise BundleError(f"Saving the LLM produced pickle files {pickles}; refusing.")
        return target

    def save_embeddings(self, newline, separator) -> Path:
        target = self.dir / B.EMBEDDINGS
        np.savez(target, image_newline=np.asarray(newline, dtype=np.float32),
                 image_separator=np.asarray(separator, dtype=np.float32))
        return target

    def save_rfm(self, rfm, fp16: bool = False) -> Path:
        """rfm.safetensors (trainable weights + config) and rfm.onnx (scoring graph)."""
        rfm.save(self.dir / B.RFM_WEIGHTS)
        return rfm.export_onnx(self.dir / B.RFM_ONNX, fp16=fp16)

    def finish(self, manifest: B.Manifest) -> Path:
        """Write the manifest, validate the whole folder with the engine's loader, then publish."""
        manifest.write(self.dir / B.MANIFEST)
        B.load_bundle(self.dir)
        if self.final.exists():
            shutil.rmtree(self.final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.dir, self.final)
        self.finished = True
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def rfm_manifest_section(rfm, made: str = "copied", loss: Optional[dict] = None) -> dict:
    """The manifest's `rfm` entry for a RegionFocusTorch."""
    c = rfm.config
    return {"layers": [int(l) for l in c.layers], "copied_from": c.copied_from,
            "scoring_layer": c.scoring_layer, "made": made, "loss": dict(loss or {}),
            "num_attention_heads": c.num_attention_heads,
            "num_key_value_heads": c.num_key_value_heads, "head_dim": c.head_dim,
            "weights": B.RFM_WEIGHTS, "onnx": B.RFM_ONNX,
            "scoring": "softmax over HR keys of the last prompt token's q.k/sqrt(d) at the "
                       "scoring layer, mean over heads"}


def replace_rfm(bundle_dir, rfm, made: str, loss: Optional[dict] = None, fp16: bool = False,
                provenance_note: Optional[str] = None) -> Path:
    """Swap the RFM of an existing bundle in place (rfm.safetensors, rfm.onnx, manifest rfm)."""
    root = Path(bundle_dir)
    manifest = B.read_manifest(root)
    if rfm.config.hidden_size != manifest.hidden_size:
        raise BundleError(f"The RFM is {rfm.config.hidden_size}-dim but {root / B.MANIFEST} "
                          f"says hidden size {manifest.hidden_size}.")
    tmp_onnx, tmp_weights = root / (B.RFM_ONNX + ".new"), root / (B.RFM_WEIGHTS + ".new")
    rfm.save(tmp_weights)
    rfm.export_onnx(tmp_onnx, fp16=fp16)
    for stale in root.glob(B.RFM_ONNX + ".data"):
        stale.unlink()
    _replace_onnx(tmp_onnx, root / B.RFM_ONNX)
    os.replace(tmp_weights, root / B.RFM_WEIGHTS)
    manifest.rfm = rfm_manifest_section(rfm, made, loss)
    if provenance_note:
        manifest.provenance.setdefault("history", []).append(provenance_note)
    manifest.write(root / B.MANIFEST)
    B.load_bundle(root)
    return root


def _replace_onnx(tmp: Path, final: Path) -> None:
    """Rename an exported graph; if it keeps external data, re-save it under the final name."""
    data = tmp.with_name(tmp.name + ".data")
    if not data.exists():
        os.replace(tmp, final)
        return
    import onnx

    model = onnx.load(str(tmp), load_external_data=True)
    onnx.save_model(model, str(final), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=final.name + ".data")
    tmp.unlink()
    data.unlink()
