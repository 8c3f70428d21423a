"""RFM distillation on a tiny bundle: teacher rows, loss drop on held-out questions, ONNX re-export,
checkpoints and resume. Real GDAL rasters, real ONNX Runtime, real transformers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.training

pytest_plugins = ["tests.fixtures_models"]

QUESTIONS = ["How many ships are in the harbour?", "What is the color of the large building?",
             "Is there a bridge over the river?", "Are there any airplanes near the runway?"]
SUFFIX = "\nAnswer the question using a single word or phrase."


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models on a shared CPU: extra torch threads spin and cost far more than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_bundle):
    """A copy of the tiny bundle whose RFM is copied for layers [1, 3] (so LLM layer 2 is skipped,
    as the paper's list skips layers), three GeoTIFFs and twelve LRS-VQA style questions."""
    from transformers import AutoModelForCausalLM

    from rs_vqa_plugin.modeling.bundle_writer import replace_rfm
    from rs_vqa_plugin.modeling.rfm_torch import RegionFocusTorch
    from tests.rasters import make_rgb_scene

    root = tmp_path_factory.mktemp("distill")
    bundle = root / "base"
    shutil.copytree(tiny_bundle, bundle)
    lm = AutoModelForCausalLM.from_pretrained(bundle / "llm", dtype=torch.float32)
    replace_rfm(bundle, RegionFocusTorch.from_llm(lm, [1, 3]), made="copied")
    images = root / "images"
    images.mkdir()
    lines = []
    for n, (size, seed) in enumerate((((500, 300), 1), ((400, 400), 2), ((350, 620), 3))):
        make_rgb_scene(images / f"scene{n}.tif", size=size, seed=seed)
        for k, text in enumerate(QUESTIONS):
            lines.append(json.dumps({"question_id": f"FAIR_{n}_{k}", "image": f"scene{n}.tif",
                                     "text": text + SUFFIX, "category": "count",
                                     "ground_truth": "two"}))
    data = root / "questions.jsonl"
    data.write_text("\n".join(lines) + "\n")
    return bundle, data, images


def _options(**kw):
    from rs_vqa_plugin.modeling.distill import DistillOptions

    base = dict(steps=60, lr=1e-3, save_every=20, heldout_fraction=0.25, device="cpu")
    base.update(kw)
    return DistillOptions(**base)


@pytest.fixture(scope="module")
def trained(inputs, tmp_path_factory):
    from rs_vqa_plugin.modeling.distill import distill

    bundle, data, images = inputs
    out = tmp_path_factory.mktemp("distilled") / "bundle"
    events = []
    report = distill(bundle, data, out, _options(images_dir=str(images)), events=events.append)
    return report, out, events


def test_teacher_rows_match_a_copied_rfm_at_the_first_pair(inputs, trained):
    """The first pair's RFM layer sees exactly the LLM's input (copies of layers 0, 1): its row
    must equal the LLM's eager attention row; the last pair (layer 2 skipped) must differ."""
    from rs_vqa_plugin.modeling.distill_data import Sample
    from rs_vqa_plugin.modeling.rfm_torch import RegionFocusTorch

    bundle, _, _ = inputs
    _, out, _ = trained
    sample = Sample.load(sorted((out / "distill_state" / "samples" / "train").glob("*.npz"))[0])
    rfm = RegionFocusTorch.load(bundle / "rfm.safetensors")
    with torch.no_grad():
        rows = rfm.forward_attention_rows(torch.from_numpy(sample.embeds), sample.query_index)
    first = torch.softmax(rows[1], dim=-1).numpy()
    last = torch.softmax(rows[3], dim=-1).numpy()
    assert sample.teacher.shape == (2, 4, sample.embeds.shape[0])
    np.testing.assert_allclose(first, sample.teacher[0], atol=1e-5)
    assert np.abs(last - sample.teacher[1]).max() > 0.02 * sample.teacher[1].max()
    assert sample.hr_mask.sum() > 0 and sample.query_index == sample.embeds.shape[0] - 1


def test_heldout_loss_drops_and_manifest_records_it(inputs, trained):
    from rs_vqa_plugin.engine.bundle import load_bundle
    from rs_vqa_plugin.modeling.distill_loss import MSE_FORMS, DistillLossSettings

    bundle, _, _ = inputs
    report, out, events = trained
    print(f"held-out distillation loss {report.heldout_before:.3e} -> {report.heldout_after:.3e} "
          f"({report.steps} steps, {report.train_questions} train / {report.heldout_questions} "
          "held-out questions)")
    assert report.heldout_before > 0
    assert report.heldout_after < 0.2 * report.heldout_before
    m = load_bundle(out).manifest
    assert m.rfm["made"] == "distilled" and m.rfm["layers"] == [1, 3]
    loss = m.rfm["loss"]
    assert loss["steps"] == 60 and loss["lambda_hr"] == 2.0 and loss["lambda_mse"] == 1.0
    assert loss["mse_form"] == "centred_log" and loss["mse_on"] == MSE_FORMS["centred_log"]
    assert DistillLossSettings.from_dict(loss) == DistillLossSettings()
    assert loss["distilled_layers"] == [1, 3]
    assert loss["heldout_loss_before"] == pytest.approx(report.heldout_before)
    assert loss["heldout_loss_after"] == pytest.approx(report.heldout_after)
    assert load_bundle(bundle).manifest.rfm["made"] == "copied"      # the source is untouched
    stages = {e["stage"] for e in events if e["type"] == "progress"}
    assert {"prepare", "distill", "export"} <= stages


def test_reexported_onnx_matches_trained_torch_rfm(trained):
    from rs_vqa_plugin.engine.bundle import load_bundle
    from rs_vqa_plugin.engine.rfm import RegionFocus
    from rs_vqa_plugin.modeling.distill_data import Sample
    from rs_vqa_plugin.modeling.rfm_torch import RegionFocusTorch

    _, out, _ = trained
    bundle = load_bundle(out)
    onnx_rfm = RegionFocus(bundle, device="cpu")
    torch_rfm = RegionFocusTorch.load(bundle.rfm_weights_path)
    sample = Sample.load(sorted((out / "distill_state" / "samples" / "heldout").glob("*.npz"))[0])
    for length in (sample.embeds.shape[0], sample.embeds.shape[0] - 30):   # two lengths
        embeds, mask = sample.embeds[-length:], sample.hr_mask[-length:]
        got = onnx_rfm.score(embeds, mask, length - 1)
        with torch.no_grad():
            want = torch_rfm.scores(torch.from_numpy(embeds), torch.from_numpy(mask),
                                    torch.tensor(length - 1)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)


def _cancel_at(step):
    from rs_vqa_plugin.engine.progress import CancelToken

    token = CancelToken()

    def sink(event):
        sink.events.append(event)
        if event.get("stage") == "distill" and event["message"].startswith(f"step {step}/"):
            token.cancel()
    sink.events = []
    return token, sink


def _bundle_with_samples(inputs, trained, folder):
    """A copy of the base bundle holding the samples the trained run prepared (same LLM, same
    data), so these runs train at once instead of re-running the teacher."""
    bundle, _, _ = inputs
    shutil.copytree(bundle, folder)
    shutil.copytree(trained[1] / "distill_state" / "samples", folder / "distill_state" / "samples")
    return folder


def test_resume_continues_exactly_from_the_checkpoint(inputs, trained, tmp_path):
    from safetensors.torch import load_file

    from rs_vqa_plugin.engine.errors import Cancelled, InputError
    from rs_vqa_plugin.modeling.distill import distill
    from rs_vqa_plugin.modeling.distill_loss import DistillLossSettings

    _, data, images = inputs
    opts = dict(steps=8, save_every=100, images_dir=str(images))
    interrupted = _bundle_with_samples(inputs, trained, tmp_path / "interrupted")
    straight = _bundle_with_samples(inputs, trained, tmp_path / "straight")
    token, sink = _cancel_at(3)
    with pytest.raises(Cancelled):
        distill(interrupted, data, None, _options(**opts), events=sink, cancel=token)
    state = json.loads((interrupted / "distill_state" / "state.json").read_text())
    assert state["step"] == 3 and len(state["losses"]) == 3
    with pytest.raises(InputError, match="--resume"):
        distill(interrupted, data, None, _options(**opts))
    with pytest.raises(InputError, match="same loss settings"):
        distill(interrupted, data, None, _options(resume=True, **opts,
                                                  loss=DistillLossSettings(mse_form="probs")))
    token, sink = _cancel_at(6)
    with pytest.raises(Cancelled):
        distill(interrupted, data, None, _options(resume=True, **opts), events=sink, cancel=token)
    token, sink = _cancel_at(6)
    with pytest.raises(Cancelled):
        distill(straight, data, None, _options(**opts), events=sink, cancel=token)
    a = json.loads((interrupted / "distill_state" / "state.json").read_text())
    b = json.loads((straight / "distill_state" / "state.json").read_text())
    assert a["step"] == b["step"] == 6
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5)
    wa = load_file(str(interrupted / "distill_state" / "rfm.safetensors"))
    wb = load_file(str(straight / "distill_state" / "rfm.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=1e-5)
    # the trained run's samples were reused: no teacher was loaded for these runs
    assert not any("loading" in e["message"] for e in sink.events if e.get("stage") == "prepare")
    assert any(e.get("stage") == "prepare" for e in sink.events)


def test_cli_reports_bad_input_clearly(inputs, tmp_path, capsys):
    from rs_vqa_plugin.commands import main

    bundle, data, images = inputs
    assert main(["distill", str(bundle), str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl does not exist" in capsys.readouterr().err
    assert main(["distill", str(bundle), str(data), "--images", str(images), "--out",
                 str(tmp_path / "new"), "--resume"]) == 2
    assert "Nothing to resume" in capsys.readouterr().err


def test_cli_mse_form_reaches_the_manifest(inputs, trained, tmp_path, capsys):
    """--mse-form probs (the first implementation's form) is trained with and recorded."""
    from rs_vqa_plugin.commands import main
    from rs_vqa_plugin.engine.bundle import load_bundle

    _, data, images = inputs
    bundle = _bundle_with_samples(inputs, trained, tmp_path / "old-form")
    assert main(["distill", str(bundle), str(data), "--images", str(images), "--steps", "2",
                 "--lr", "1e-3", "--device", "cpu", "--mse-form", "probs"]) == 0
    loss = load_bundle(bundle).manifest.rfm["loss"]
    assert loss["mse_form"] == "probs" and loss["mse_on"] == "renormalised HR attention probabilities"
    with pytest.raises(SystemExit):
        main(["distill", str(bundle), str(data), "--mse-form", "logits"])
    assert "invalid choice: 'logits'" in capsys.readouterr().err


def test_level_window_for_deeper_sequences():
    """SampleBuilder.sequence(question, level, window): the centred window of a deeper level (what
    bench/bench_distill_loss.py measures at ~1,300 and ~5,000 HR tokens); 0 = all tiles."""
    from rs_vqa_plugin.engine.errors import InputError
    from rs_vqa_plugin.engine.pyramid import plan_pyramid
    from rs_vqa_plugin.modeling.distill_data import _window

    plan = plan_pyramid(3072, 2048, tile_size=64, token_grid=4)
    assert _window(plan.level(1), 0) == plan.level(1).tiles()
    level = plan.level(3)
    tiles = _window(level, 4)
    assert len(tiles) == 16 and len(set(tiles)) == 16
    rows, cols = sorted({r for r, _ in tiles}), sorted({c for _, c in tiles})
    assert rows[0] == (level.rows - 4) // 2 and cols[0] == (level.cols - 4) // 2
    with pytest.raises(InputError, match=f"level 3 has {level.rows} x {level.cols} tiles"):
        _window(level, level.rows + 1)
