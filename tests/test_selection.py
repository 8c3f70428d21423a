"""Where dip looks next (engine.selection): the paper's rule and the narrowing `mass` rule, as pure
functions on the plan, and an oracle-scored run that reaches the finest level of a real GeoTIFF."""

from __future__ import annotations

import numpy as np
import pytest

from rs_vqa_plugin.engine.errors import InputError
from rs_vqa_plugin.engine.pyramid import level_valid_token_shape, plan_pyramid
from rs_vqa_plugin.engine.selection import MASS_DEFAULTS, Selection, fewest_tokens_holding, next_step
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


def test_mass_stops_on_diffuse_attention_and_at_the_finest_level():
    plan = plan_pyramid(27328, 27328)
    tokens = _tokens(plan, 1)
    uniform = np.full(len(tokens), 1.0 / len(tokens))
    step = next_step(Selection.parse("mass"), plan, 1, tokens, uniform, 0.25, 80)
    assert step.stop == "diffuse"
    finest = len(plan.levels)
    step = next_step(Selection.parse("mass"), plan, finest, _tokens(plan, finest, [(0, 0)]),
                     np.ones(144) / 144, 0.25, 80)
    assert step.stop == "finest-level"


@pytest.mark.parametrize("selection,reaches_finest", [("mass", True), ("paper", None)])
def test_oracle_scorer_run(tiny_bundle, tmp_path, selection, reaches_finest):
    """A perfect scorer on a 2,400 px scene (tile 112: 4 levels): the mass selection reaches the
    finest level with the box in the tiles read at every level."""
    from rs_vqa_plugin.engine.pipeline import AskOptions, Engine
    from tests.rasters import make_rgb_scene

    scene = make_rgb_scene(tmp_path / "scene.tif", size=2400, seed=4)
    engine = Engine(tiny_bundle, device="cpu")
    box = (1510.0, 610.0, 1530.0, 628.0)
    answer = engine.ask(scene, "What colour is the car?", AskOptions(
        mode="dip", selection=selection, oracle_box=box, max_new_tokens=1))
    t = answer.trace
    plan = plan_pyramid(2400, 2400, tile_size=112, token_grid=engine.manifest.pooled_grid)
    assert t["selection"].startswith(selection)
    if reaches_finest:
        assert t["levels"][-1] == len(plan.levels) and t["stop_reason"] == "finest-level"
        assert t["tiles_encoded"] + t["tiles_from_cache"] <= 9 + 2 * MASS_DEFAULTS["tile_budget"]
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
