"""The cost accounting reproduces the paper's Table 4 (4000 x 4000 image, Qwen2-7B dimensions)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rs_vqa_plugin.engine.cost import ModelDims, keep_count, layer_flops, paper_estimate, run_flops
from rs_vqa_plugin.engine.errors import InputError

# Qwen2-7B: hidden 3584, FFN 18944, 28 layers; the paper's RFM runs 4 layers per pass.
QWEN2_7B = ModelDims(hidden=3584, ffn=18944, layers=28, rfm_layers=4)


def test_layer_formula_counts_each_term():
    # n=2, d=3, m=5: 4*2*9 + 2*4*3 + 3*2*3*5 = 72 + 24 + 90
    assert layer_flops(2, 3, 5) == 186


def test_table4_anyres_p144_full_grid():
    """anyres-p144: 83,520 encoder tokens, 21,312 into the LLM, 243.37 TFLOPs."""
    est = paper_estimate(4000, 4000, QWEN2_7B, mode="full")
    assert est["encoder_tokens"] == 83520
    assert est["llm_vision_tokens"] == 21312
    assert round(est["tflops"]["total"], 2) == 243.37


def test_table4_prune_only_at_finest_level():
    """anyres-p144 w/ prune (ours): 5,760 tokens into the LLM, 82.56 TFLOPs."""
    est = paper_estimate(4000, 4000, QWEN2_7B, mode="prune-only", level=3)
    assert est["llm_vision_tokens"] == 5760
    assert round(est["tflops"]["total"], 2) == 82.56


def test_table4_dip_with_pruning():
    """DIP w/ prune (ours): 9, 36 then 50 tiles -> 55,296 encoder tokens, 2,376 LLM tokens, 36.61 TFLOPs."""
    est = paper_estimate(4000, 4000, QWEN2_7B, mode="dip", selected_tiles=[9, 36, 50])
    assert est["levels"] == [1008, 2000, 4000]
    assert est["encoder_tokens"] == 55296
    assert est["llm_vision_tokens"] == 2376
    assert round(est["tflops"]["total"], 2) == 36.61


def test_dip_default_prunes_at_level_one():
    est = paper_estimate(4000, 4000, QWEN2_7B, mode="dip")
    assert est["tiles_per_pass"] == [9]
    assert est["llm_vision_tokens"] == 576 + 9 * 144 // 4


def test_thumbnail_mode_has_no_rfm():
    est = paper_estimate(4000, 4000, QWEN2_7B, mode="thumbnail")
    assert est["flops"]["rfm"] == 0 and est["llm_vision_tokens"] == 576


def test_selected_tiles_beyond_a_level_are_refused():
    with pytest.raises(InputError, match="level 2 has 36"):
        paper_estimate(4000, 4000, QWEN2_7B, mode="dip", selected_tiles=[9, 37])
    with pytest.raises(InputError, match="pyramid levels"):
        paper_estimate(4000, 4000, QWEN2_7B, mode="dip", selected_tiles=[9, 36, 50, 10])


def test_keep_count_rounds_up_and_keeps_one():
    assert keep_count(20736, 0.25) == 5184
    assert keep_count(3, 0.25) == 1
    assert keep_count(0, 0.25) == 0


def test_run_flops_sums_passes():
    dims = ModelDims(hidden=8, ffn=16, layers=2, rfm_layers=1)
    flops = run_flops(dims, 10, [5, 7])
    assert flops["rfm"] == layer_flops(5, 8, 16) + layer_flops(7, 8, 16)
    assert flops["llm"] == 2 * layer_flops(10, 8, 16)
    assert flops["total"] == flops["rfm"] + flops["llm"]


@pytest.mark.subprocess
def test_cost_cli_json(repo_root):
    out = subprocess.run(
        [sys.executable, "-m", "rs_vqa_plugin", "cost", "--image-size", "4000", "4000",
         "--hidden", "3584", "--ffn", "18944", "--layers", "28", "--rfm-layers", "4",
         "--mode", "dip", "--selected-tiles", "9,36,50", "--json"],
        cwd=repo_root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert round(data["tflops"]["total"], 2) == 36.61
    assert data["llm_vision_tokens"] == 2376


@pytest.mark.subprocess
def test_cost_cli_bad_tiles_is_a_clear_error(repo_root):
    out = subprocess.run(
        [sys.executable, "-m", "rs_vqa_plugin", "cost", "--image-size", "4000", "4000",
         "--hidden", "3584", "--ffn", "18944", "--layers", "28", "--selected-tiles", "9,99"],
        cwd=repo_root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "level 2 has 36" in out.stderr


def test_qwen25_family_token_counts(capsys):
    """Qwen2.5-VL at 336 px tiles: 144 merged tokens for the thumbnail and each tile, two
    separator tokens in every RFM pass, 576 patches a tile before the merger."""
    import json

    from rs_vqa_plugin.commands import main

    args = ["cost", "--image-size", "4000", "4000", "--hidden", "3584", "--ffn", "18944",
            "--layers", "28", "--json", "--mode", "dip", "--selected-tiles", "9,36"]
    assert main(args + ["--family", "qwen2.5-vl"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["rfm_tokens"] == [144 + 2 + 9 * 144, 144 + 2 + 36 * 144]
    assert est["llm_vision_tokens"] == 144 + keep_count(36 * 144, 0.25)
    assert est["encoder_tokens"] == 576 * (1 + 9 + 36)
    assert main(args) == 0                                   # LLaVA's geometry is unchanged
    assert json.loads(capsys.readouterr().out)["rfm_tokens"] == [576 + 1 + 9 * 144, 576 + 1 + 36 * 144]
    assert main(args + ["--family", "qwen2.5-vl", "--tile-size", "300"]) == 2
    assert "multiple of 28" in capsys.readouterr().err
