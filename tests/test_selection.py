"""Where dip looks next (engine.selection): the paper's rule and the narrowing `mass` rule, as pure
functions on the plan, and an oracle-scored run that reaches the finest level of a real GeoTIFF."""

from __future__ import annotations

import numpy as np
import pytest

from rs_vqa_plugin.engine.errors import InputError
from rs_vqa_plugin.engine.pyramid import level_valid_token_shape, plan_pyramid
from rs_vqa_plugin.engine.selection import (FOCUS_DEFAULTS, MASS_DEFAULTS, Selection,
                                            fewest_tokens_holding, next_step, start_level,
                                            top_run_within)
from rs_vqa_plugin.engine.sequence import level_tokens

pytest_plugins = ["tests.fixtures_models"]


def _tokens(plan, level, tiles=None):
    tiles = tiles or plan.level(level).tiles()
    g = plan.token_grid
    features = np.zeros((len(tiles), g, g, 2), np.float32)
    return level_tokens(plan, level, tiles, features, level_valid_token_shape(plan, level))


def test_parse_names_parameters_and_refusals():
    assert Selection.parse("paper") == Selection("paper", {})
    mass = Selection.parse("mass:mass_share=0.5,tile_budget=16")
    assert mass.params == {**MASS_DEFAULTS, "mass_share": 0.5, "tile_budget": 16}
    assert Selection.parse({"name": "mass", "max_jump": 3}).params["max_jump"] == 3
    assert Selection.parse({"keep_rounding": "floor"}).name == "paper"
    assert "mass_share=0.5" in mass.describe()
    focus = Selection.parse("focus:tile_budget=48")
    assert focus.params == {**FOCUS_DEFAULTS, "tile_budget": 48}
    with pytest.raises(InputError, match="unknown parameter mass_share of the focus"):
        Selection.parse("focus:mass_share=0.5")
    with pytest.raises(InputError, match="min_tokens"):
        Selection.parse("focus:min_tokens=0.5")
    for bad, why in (("zoom", "unknown selection"), ("mass:share=1", "unknown parameter"),
                     ("mass:mass_share=2", "mass_share"), ("mass:tile_budget=0", "tile_budget"),
                     ("mass:tile_budget", "key=value"), ("paper:x=1", "no parameters")):
        with pytest.raises(InputError, match=why):
            Selection.parse(bad)


def test_fewest_tokens_holding_a_share():
    scores = np.array([0.5, 0.0, 0.1, 0.0, 0.3, 0.1])
    assert fewest_tokens_holding(scores, 0.5).tolist() == [0]
    assert fewest_tokens_holding(scores, 0.8).tolist() == [0, 4]
    assert fewest_tokens_holding(scores, 1.0).tolist() == [0, 2, 4, 5]
    assert fewest_tokens_holding(np.zeros(4), 0.5).size == 0


def test_mass_narrows_and_jumps_where_the_paper_cannot():
    plan = plan_pyramid(27328, 27328)
    tokens = _tokens(plan, 1)
    scores = np.full(len(tokens), 1e-6)
    scores[(tokens.rows == 13) & (np.isin(tokens.cols, (20, 21)))] = 1.0   # a compact object
    scores /= scores.sum()
    paper = next_step(Selection.parse("paper"), plan, 1, tokens, scores, 0.25, 80)
    assert paper.level == 2 and len(paper.tiles) >= 9          # a quarter of 9 tiles' tokens
    mass = next_step(Selection.parse("mass"), plan, 1, tokens, scores, 0.25, 80)
    assert mass.level == 3 and 1 <= len(mass.tiles) <= MASS_DEFAULTS["tile_budget"]


def test_mass_stops_on_diffuse_attention():
    plan = plan_pyramid(27328, 27328)
    tokens = _tokens(plan, 1)
    uniform = np.full(len(tokens), 1.0 / len(tokens))
    step = next_step(Selection.parse("mass"), plan, 1, tokens, uniform, 0.25, 80)
    assert step.stop == "diffuse"


@pytest.mark.parametrize("name", ["paper", "mass", "focus"])
def test_every_selection_stops_at_the_finest_level(name):
    plan = plan_pyramid(27328, 27328)
    finest = len(plan.levels)
    step = next_step(Selection.parse(name), plan, finest, _tokens(plan, finest, [(0, 0)]),
                     np.ones(144) / 144, 0.25, 80)
    assert step.stop == "finest-level"


def test_top_run_within_keeps_the_longest_prefix_that_fits():
    plan = plan_pyramid(27328, 27328)
    tokens = _tokens(plan, 1)
    order = np.arange(len(tokens))
    count, tiles = top_run_within(plan, 1, tokens.rows, tokens.cols, order, 3, 6)
    assert 1 <= count < len(tokens) and len(tiles) <= 6
    more, _ = top_run_within(plan, 1, tokens.rows, tokens.cols, order[:count + 1], 3, 10 ** 6)
    assert more == count + 1                   # the next token alone would have fitted only
    assert tiles == sorted(tiles)              # without the budget


def test_focus_keeps_what_the_budget_holds_and_goes_down_fast():
    plan = plan_pyramid(27328, 27328)
    tokens = _tokens(plan, 1)
    budget = FOCUS_DEFAULTS["tile_budget"]
    # flat scores (a level too coarse to see the object): as many candidates as the budget holds,
    # never a 'diffuse' stop as the mass rule would
    flat = np.full(len(tokens), 1.0 / len(tokens))
    assert next_step(Selection.parse("mass"), plan, 1, tokens, flat, 0.25, 80).stop == "diffuse"
    step = next_step(Selection.parse("focus"), plan, 1, tokens, flat, 0.25, 80)
    assert step.level == 3 and FOCUS_DEFAULTS["min_tokens"] <= len(step.tiles) <= budget
    # a peaked score: the deepest jump allowed, few tiles
    peaked = np.full(len(tokens), 1e-6)
    peaked[(tokens.rows == 13) & (tokens.cols == 20)] = 1.0
    step = next_step(Selection.parse("focus:max_jump=3"), plan, 1, tokens, peaked, 0.25, 80)
    assert step.level == 4 and len(step.tiles) <= budget
    # N_max caps the budget; a budget that cannot hold min_tokens tokens' tiles stops
    assert next_step(Selection.parse("focus:min_tokens=20"), plan, 1, tokens, flat, 0.25, 80).level
    step = next_step(Selection.parse("focus:min_tokens=20"), plan, 1, tokens, flat, 0.25, 2)
    assert step.stop == "diffuse"


def test_focus_may_start_below_level_one():
    plan = plan_pyramid(27328, 27328, tile_size=64, token_grid=4)
    assert start_level(Selection.parse("paper"), plan) == start_level(Selection.parse("focus"), plan) == 1
    level = start_level(Selection.parse("focus:start_tiles=64"), plan)
    assert plan.level(level).tile_count() <= 64 < plan.level(level + 1).tile_count()
    assert start_level(Selection.parse("focus:start_tiles=1"), plan) == 1
    with pytest.raises(InputError, match="start_tiles"):
        Selection.parse("focus:start_tiles=-1")


@pytest.mark.parametrize("selection,reaches_finest", [("mass", True), ("focus", True),
                                                      ("paper", None)])
def test_oracle_scorer_run(tiny_bundle, tmp_path, selection, reaches_finest):
    """A perfect scorer on a 2,400 px scene (tile 112: 4 levels): the mass selection reaches the
    finest level with the box in the tiles read at every level."""
    from rs_vqa_plugin.engine.pipeline import AskOptions, Engine
    from tests.rasters import make_rgb_scene

    scene = make_rgb_scene(tmp_path / "scene.tif", size=2400, seed=4)
    engine = Engine(tiny_bundle, device="cpu")
    engine.shadow_rfm = True        # the benchmark's diagnostic: the RFM's rank of the box per pass
    box = (1510.0, 610.0, 1530.0, 628.0)
    answer = engine.ask(scene, "What colour is the car?", AskOptions(
        mode="dip", selection=selection, oracle_box=box, max_new_tokens=1))
    t = answer.trace
    plan = plan_pyramid(2400, 2400, tile_size=112, token_grid=engine.manifest.pooled_grid)
    assert t["selection"].startswith(selection)
    assert [p["level"] for p in t["shadow"]] == t["levels"]
    assert all(1 <= p["rank"] <= p["tokens"] and 0 <= p["mass"] <= 1 for p in t["shadow"])
    if reaches_finest:
        assert t["levels"][-1] == len(plan.levels) and t["stop_reason"] == "finest-level"
        budget = (MASS_DEFAULTS if selection == "mass" else FOCUS_DEFAULTS)["tile_budget"]
        assert t["tiles_encoded"] + t["tiles_from_cache"] <= 9 + 3 * budget
        for level, tiles in t["tiles"].items():
            lv = plan.level(int(level))
            col, row = int(1520 * lv.scale_x // 112), int(619 * lv.scale_y // 112)
            assert [row, col] in tiles, level


def test_settings_carry_the_selection_to_the_worker_options():
    from rs_vqa_plugin.engine.worker import make_ask_options
    from rs_vqa_plugin.gui.models import selection_problem
    from rs_vqa_plugin.settings import PluginSettings

    options = PluginSettings(selection="mass:mass_share=0.5").ask_options()
    assert make_ask_options(options).selection == "mass:mass_share=0.5"
    assert "selection" not in PluginSettings().ask_options()
    assert selection_problem("") is None and selection_problem("paper") is None
    assert "unknown selection" in selection_problem("everything")
