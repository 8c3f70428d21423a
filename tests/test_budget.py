"""The memory budget before any work (issue 18): every mode over its limit is refused before a
tile is read, naming the figure and the way out, and writes nothing."""

from __future__ import annotations

import os

import pytest

from rs_vqa_plugin.engine import budget
from rs_vqa_plugin.engine.errors import InputError
from rs_vqa_plugin.engine.pipeline import AskOptions, Engine
from rs_vqa_plugin.engine.pyramid import plan_pyramid
from tests.rasters import make_rgb_scene

pytest_plugins = ["tests.fixtures_models"]

QUESTION = "How many ships are in the harbour?"
WAY_OUT = {"dip": "lower N_max (now 24)", "prune-only": "choose a level below 2",
           "grid": "choose a level below 2", "full": "use mode 'dip'",
           "thumbnail": "shorten the question"}


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    return Engine(tiny_bundle, device="cpu")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_rgb_scene(tmp_path_factory.mktemp("budget") / "scene.tif", size=(700, 500), seed=4)


@pytest.mark.parametrize("mode", sorted(WAY_OUT))
def test_each_mode_over_its_memory_limit_is_refused_before_reading(engine, scene, tmp_path, mode):
    cache = tmp_path / "overviews"
    cache.mkdir()
    before = set(os.listdir(scene.parent))
    events = []
    options = AskOptions(mode=mode, level=2, n_max=24, memory_limit_mb=0.05,
                         overview_cache_dir=str(cache))
    with pytest.raises(InputError) as refused:
        engine.ask(scene, QUESTION, options, events=events.append)
    message = str(refused.value)
    assert f"Mode '{mode}'" in message and "above the memory limit of 0 MB" in message
    assert " tokens, about " in message and "MB" in message
    assert WAY_OUT[mode] in message and "raise memory_limit_mb" in message
    # Opening the raster may report on it (bands, the 8-bit stretch); no thumbnail or tile is read.
    work = [e for e in events if e.get("stage") in ("encode", "score", "generate") or (
        e.get("stage") == "read" and ("thumbnail" in e["message"] or "tiles" in e["message"]))]
    assert not work
    assert set(os.listdir(scene.parent)) == before and not os.listdir(cache)


def test_the_same_asks_run_under_a_sufficient_limit(engine, scene):
    for mode in ("dip", "thumbnail"):
        answer = engine.ask(scene, QUESTION, AskOptions(mode=mode, max_new_tokens=1,
                                                        memory_limit_mb=4096))
        assert answer.mode == mode


def test_a_dip_pass_is_checked_with_its_own_tiles(engine, scene):
    m = engine.manifest
    plan = plan_pyramid(700, 500, tile_size=m.tile_size, token_grid=m.pooled_grid,
                        **m.plan_options())
    tiles = plan.level(2).tiles()[:3]
    engine._pass_budget(plan, 2, tiles, 80, 24, 4096.0)            # fits: no error
    with pytest.raises(InputError, match=r"level 2 pass over 3 tiles .* lower N_max \(now 24\)"):
        engine._pass_budget(plan, 2, tiles, 80, 24, 0.001)


def test_estimates_follow_the_attention(engine):
    dims = engine.budget_dims
    assert dims.attention == "sdpa" and dims.prefill_chunk == 0
    one, four = budget.llm_prefill_mb(dims, 2000), budget.llm_prefill_mb(dims, 8000)
    assert four == pytest.approx(4 * one)                          # linear: no L x L matrix
    one_pass = budget.BudgetDims(**{**dims.__dict__, "attention": "eager", "prefill_chunk": 0})
    assert budget.llm_prefill_mb(one_pass, 8000) > 10 * budget.llm_prefill_mb(one_pass, 2000)
    chunked = budget.BudgetDims(**{**dims.__dict__, "attention": "eager", "prefill_chunk": 1024})
    assert (budget.llm_prefill_mb(dims, 8000) < budget.llm_prefill_mb(chunked, 8000)
            < budget.llm_prefill_mb(one_pass, 8000))
    assert budget.rfm_pass_mb(dims, 8000) == pytest.approx(4 * budget.rfm_pass_mb(dims, 2000))


def test_limit_defaults_to_a_share_of_available_memory():
    free = budget.available_mb()
    assert free and free > 0
    assert budget.resolve_limit_mb(None) == pytest.approx(0.8 * free, rel=0.2)
    assert budget.resolve_limit_mb(512) == 512.0
    with pytest.raises(InputError, match="memory_limit_mb must be positive"):
        budget.resolve_limit_mb(0)
