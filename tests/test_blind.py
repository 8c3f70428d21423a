"""The blind diagnostic (AskOptions.blind, bench_default mode 'blind') and the text-only baselines:
the model gets no image content, and the synthetic benchmark's wording gives no answer away."""

from __future__ import annotations

import numpy as np
import pytest

from rs_vqa_plugin.engine.errors import InputError
from rs_vqa_plugin.engine.pipeline import AskOptions, Engine
from tests.rasters import make_rgb_scene, write_geotiff

MODEL = "models/default"
QUESTION = "What is the color of the left-most vehicle in the image?"


@pytest.fixture(scope="module")
def spied_engine(repo_root):
    """The shipped model, its real LLM wrapped to record the input embeddings of each answer."""
    engine = Engine(repo_root / MODEL, device="cpu")
    seen = []
    generate = engine.llm.generate

    def recording(embeds, *args, **kwargs):
        seen.append(np.array(embeds, copy=True))
        return generate(embeds, *args, **kwargs)

    engine.llm.generate = recording
    return engine, seen


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blind")
    empty = np.zeros((3, 300, 400), np.uint8)
    return {"a": make_rgb_scene(folder / "a.tif", size=(700, 500), seed=1),
            "b": make_rgb_scene(folder / "b.tif", size=(500, 900), seed=2),
            # every pixel nodata: the engine refuses it, the blind diagnostic never reads it
            "empty": write_geotiff(folder / "empty.tif", empty, nodata=0)}


def _ask(spied_engine, path, **options):
    engine, seen = spied_engine
    answer = engine.ask(path, QUESTION, AskOptions(max_new_tokens=4, **options))
    return answer, seen[-1]


def test_blind_answers_see_no_image(spied_engine, rasters):
    blind = {k: _ask(spied_engine, p, mode="thumbnail", blind=True) for k, p in rasters.items()}
    seeing = {k: _ask(spied_engine, rasters[k], mode="thumbnail") for k in ("a", "b")}
    # with the image, the two scenes give the LLM different inputs ...
    assert seeing["a"][1].shape == seeing["b"][1].shape
    assert not np.array_equal(seeing["a"][1], seeing["b"][1])
    # ... blind, every raster gives exactly the same input and answer, even one with no pixels
    for key in ("b", "empty"):
        assert np.array_equal(blind[key][1], blind["a"][1]), key
        assert blind[key][0].text == blind["a"][0].text
    trace = blind["a"][0].trace
    assert trace["pixels_read"] == 0 and trace["tiles_encoded"] == 0
    assert trace["llm_vision_tokens"] == seeing["a"][0].trace["llm_vision_tokens"]


def test_blind_refuses_modes_that_read_the_image_and_the_empty_raster_is_refused_seeing(spied_engine, rasters):
    with pytest.raises(InputError, match="blind"):
        _ask(spied_engine, rasters["a"], mode="dip", blind=True)
    with pytest.raises(InputError, match="no valid pixels"):
        _ask(spied_engine, rasters["empty"], mode="thumbnail")
