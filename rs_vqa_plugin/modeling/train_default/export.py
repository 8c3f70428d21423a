"""Trained weights -> a bundle, through the project's own converter path: save the LLaVA folder,
`convert_hf_llava` (vision.onnx, copied RFM, llm/), then `replace_rfm` with the distilled RFM,
then the manifest's keep ratio, tile cap and provenance from the recipe."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

from ...engine import bundle as B
from ..distill_loss import DistillLossSettings
from ..llava_parts import CLIP_MEAN, CLIP_STD


def save_llava_folder(model, tokenizer, recipe, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.llava.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "crop_size": {"height": recipe.tile_size, "width": recipe.tile_size}}, indent=2))
    return folder


def export_bundle(model, tokenizer, recipe, out_dir, provenance: dict,
                  overwrite: bool = True, events=None) -> Path:
    from ..bundle_writer import replace_rfm
    from ..convert_hf import convert_hf_llava

    model.eval()
    out_dir = Path(out_dir)
    # Rotary positions have no weights: the context may exceed the trained lengths, so `full` can
    # run on the smoke scenes (about 26k tokens); what is trained is far shorter, said in the card.
    context = int(getattr(recipe, "export_context", 0) or recipe.max_positions)
    model.llava.config.text_config.max_position_embeddings = max(context, recipe.max_positions)
    with tempfile.TemporaryDirectory(prefix="rs-vqa-default-") as tmp:
        src = save_llava_folder(model, tokenizer, recipe, Path(tmp) / "llava")
        convert_hf_llava(src, out_dir, rfm_layers=list(recipe.rfm_layers),
                         provenance=provenance, licence=LICENCE, events=events,
                         overwrite=overwrite)
    loss = DistillLossSettings(mse_form=recipe.distill_mse_form).to_dict()
    loss.update({"trained": "jointly with the LLM (LM loss on answer tokens)",
                 "lambda_distill": recipe.lambda_distill,
                 "box_grounding": {"lambda_teacher": recipe.lambda_ground,
                                   "lambda_rfm": recipe.lambda_rfm_box,
                                   "note": "ours: -log of the query attention mass on the asked "
                                           "object's tokens (synthetic boxes)"}})
    note = "RFM trained jointly by train-default (paper loss + box grounding)"
    if float(getattr(recipe, "focus_minutes", 0.0)) > 0:
        loss["focus"] = {"minutes": recipe.focus_minutes, "tiles": recipe.focus_tiles,
                         "note": "then alone (all else frozen) on level-1 and search views at "
                                 "every level: soft box target"}
        note += ", then alone on dip-like views (focus stage)"
    replace_rfm(out_dir, model.rfm.eval(), made="distilled", loss=loss, provenance_note=note)
    manifest = B.read_manifest(out_dir)
    manifest.alpha = float(recipe.alpha)
    manifest.n_max = int(recipe.n_max)
    if getattr(recipe, "selection", None):
        manifest.selection = dict(recipe.selection)
    manifest.name = "default"
    manifest.write(out_dir / B.MANIFEST)
    B.load_bundle(out_dir)
    return out_dir


LICENCE = ("Apache-2.0 (weights trained by this project on its own synthetic scenes; no third-party "
           "weights or data)")
