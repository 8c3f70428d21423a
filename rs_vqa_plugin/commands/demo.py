"""`demo`: the main job on the bundled default model (see README)."""

from __future__ import annotations

from ..engine.errors import BundleError
from ..paths import default_model_dir

HELP = "run the main job on the bundled default model: a demo scene, three questions, a heatmap"


def add_arguments(parser):
    parser.add_argument("--out", default="demo_output", help="folder for the scene and heatmap")


def run(args) -> int:
    model = default_model_dir()
    if not (model / "manifest.json").exists():
        raise BundleError(f"The bundled default model is not in {model} yet (it is trained by "
                          "`python -m rs_vqa_plugin train-default models/default`). Until then, "
                          "try a random tiny bundle: `python -m rs_vqa_plugin tiny-model /tmp/tiny` "
                          "and `python -m rs_vqa_plugin ask IMAGE \"QUESTION\" --model /tmp/tiny`.")
    raise BundleError("The demo job is not built yet.")
