"""The distillation loss's MSE term: how big each term is, and what each MSE form does to a short
distillation (METHOD §4; rs_vqa_plugin/modeling/distill_loss.py).

1. Term sizes (`sizes`): kl, kl_hr and the MSE term in each form on
   - real rows: the bundle's LLM (teacher) against its RFM copied from the LLM (the student a
     distillation starts from), thumbnail + the centred n x n tiles of a pyramid level, so that
     N (HR keys) is ~100, ~1,300 and ~5,000 (the default model: 144 / 1,296 / 5,184);
   - peaked synthetic rows: an attention sink, log-normal HR attention (logit std 2.5), the student
     = the teacher's logits + noise of std 0.5.
   Prints each term and each weighted term's share of the total.
2. Short distillations (`runs`): the RFM copied from the bundle's LLM, distilled with each MSE form
   by `distill` (same data, seed, steps, lr), then measured in common units on held-out questions
   of other scenes (the val split's first scene) at level 1 (the training input) and at a deeper
   9 x 9 window (dip-like deeper sequences): KL over the full row and over the HR slice (mean over
   pairs and heads), and the ranking the engine uses (the RFM score: per-head softmax over HR at
   the scoring layer, head mean) against the teacher's (same layer, HR-renormalised, head mean):
   the share of the teacher's top-25% keys in the student's top 25% (overlap) and the share of the
   teacher's top-25% mass the student's top 25% holds (mass recall).

    python bench/bench_distill_loss.py [--model models/default] [--steps 1000] [--lr 1e-4]
        [--seeds 0,1] [--forms probs,scaled_probs,centred_log] [--out bench/out/distill_loss]
        [--only sizes|runs]
Writes OUT/results.json; scenes, samples and bundles are cached in OUT (a re-run reuses them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FORMS = ("probs", "scaled_probs", "centred_log")
TRAIN_SCENES = 2          # the train split's first scenes (3072 and 4096 px), all their questions
EVAL_QUESTIONS = 40       # of the val split's first scene (6144 px)
SIZES = ((1, 0), (3, 9), (4, 18))   # (level, window): N = 144, 1,296, 5,184 on the default model
EVAL_DEEP = (3, 9)
ALPHA = 0.25


# ------------------------------------------------------------------ data
def split_scenes(split: str, count: int, data_dir: Path):
    """The split's first `count` scenes (cached) and a jsonl of all their questions."""
    from rs_vqa_plugin.benchmark.generate import make_scene, write_questions
    from rs_vqa_plugin.benchmark.scene import sidecar_path
    from rs_vqa_plugin.benchmark.splits import get_split, scene_file_name

    data_dir.mkdir(parents=True, exist_ok=True)
    spec = get_split(split)
    images = []
    for seed, width, height in spec.scenes[:count]:
        path = data_dir / scene_file_name(seed)
        if not (path.is_file() and sidecar_path(path).is_file()):
            make_scene(path, seed, width, height)
        images.append(path)
    listing = data_dir / f"{split}.first{count}.jsonl"
    if not listing.is_file():
        write_questions([sidecar_path(p) for p in images], listing, spec.per_scene)
    return listing


def builder_for(bundle, layers):
    from rs_vqa_plugin.engine.llm import LanguageModel
    from rs_vqa_plugin.engine.vision import VisionEncoder
    from rs_vqa_plugin.modeling.distill_data import SampleBuilder

    return SampleBuilder(bundle, VisionEncoder(bundle, device="cpu"),
                         LanguageModel(bundle, device="cpu"), layers)


def samples_at(builder, questions, level, window, cache: Path):
    """Sample (embeds, hr_mask, query, teacher rows) per question at a level window, cached."""
    from rs_vqa_plugin.modeling.distill_data import Sample

    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for q in questions:
        path = cache / f"{q.question_id}.L{level}w{window}.npz"
        if not path.is_file():
            seq = builder.sequence(q, level, window)
            teacher = builder.teacher_rows(seq.embeds, seq.query_index)
            Sample(q.question_id, seq.embeds.astype(np.float32), seq.hr_mask,
                   int(seq.query_index), teacher).save(path)
        out.append(Sample.load(path))
    return out


def copied_rfm(llm_model, layers):
    from rs_vqa_plugin.modeling.rfm_torch import RegionFocusTorch

    return RegionFocusTorch.from_llm(llm_model, layers)


# ------------------------------------------------------------------ 1. term sizes
def terms(teacher, student_logits, hr):
    """{kl, kl_hr, mse:<form> for each form} (unweighted means) of one batch of rows."""
    from rs_vqa_plugin.modeling.distill_loss import DistillLossSettings, distill_loss

    out = {}
    for form in FORMS:
        _, parts = distill_loss(teacher, student_logits, hr, DistillLossSettings(mse_form=form))
        out.update(kl=parts["kl"].item(), kl_hr=parts["kl_hr"].item())
        out[f"mse:{form}"] = parts["mse_hr"].item()
    return out


def synthetic_rows(n_hr, seed, heads=4, pairs=2, sigma=2.5, noise=0.5):
    """Peaked rows: a sink key (most of the mass), 30 text keys, n_hr log-normal HR keys, 12
    question keys; student logits = teacher logits + Gaussian noise."""
    import torch

    g = torch.Generator().manual_seed(seed)
    prefix, suffix = 31, 12
    length = prefix + n_hr + suffix
    logits = torch.randn(pairs, heads, length, generator=g)
    logits[..., 0] += 8.0
    logits[..., prefix:prefix + n_hr] = sigma * torch.randn(pairs, heads, n_hr, generator=g)
    student = logits + noise * torch.randn(logits.shape, generator=g)
    hr = torch.zeros(length, dtype=torch.bool)
    hr[prefix:prefix + n_hr] = True
    return torch.softmax(logits, dim=-1), student, hr


def measure_sizes(bundle_dir: Path, out: Path):
    import torch

    from rs_vqa_plugin.engine.bundle import load_bundle
    from rs_vqa_plugin.modeling.distill_data import read_questions

    bundle = load_bundle(bundle_dir)
    layers = sorted({bundle.manifest.rfm["layers"][0], bundle.manifest.rfm["layers"][-1]})
    listing = split_scenes("train", 1, out / "scenes")
    questions = read_questions(listing)[:4]
    builder = builder_for(bundle, layers)
    student = copied_rfm(builder.llm.model, bundle.manifest.rfm["layers"])
    rows = []
    for level, window in SIZES:
        values = []
        for s in samples_at(builder, questions, level, window, out / "samples" / "sizes"):
            with torch.no_grad():
                r = student.forward_attention_rows(torch.from_numpy(s.embeds), s.query_index)
            logits = torch.stack([r[l] for l in layers])
            values.append(terms(torch.from_numpy(s.teacher), logits, torch.from_numpy(s.hr_mask)))
        rows.append(dict(source="default model, copied RFM", n=int(s.hr_mask.sum()),
                         **{k: float(np.mean([v[k] for v in values])) for k in values[0]}))
    for n in (100, 1300, 5000):
        values = [terms(*synthetic_rows(n, seed)) for seed in range(4)]
        rows.append(dict(source="synthetic peaked rows", n=n,
                         **{k: float(np.mean([v[k] for v in values])) for k in values[0]}))
    return rows


def print_sizes(rows, lambdas=(1.0, 2.0, 1.0)):
    print("\n### Term sizes (unweighted means; share = weighted term / total, kl : 2 kl_hr : mse)\n")
    print("| rows | N | kl | kl_hr | " + " | ".join(f"mse {f}" for f in FORMS) + " | "
          + " | ".join(f"shares with {f}" for f in FORMS) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(FORMS) + "---|" * len(FORMS))
    for r in rows:
        shares = []
        for f in FORMS:
            w = [lambdas[0] * r["kl"], lambdas[1] * r["kl_hr"], lambdas[2] * r[f"mse:{f}"]]
            shares.append(" : ".join(f"{x / sum(w):.2f}" for x in w))
        print(f"| {r['source']} | {r['n']} | {r['kl']:.3g} | {r['kl_hr']:.3g} | "
              + " | ".join(f"{r[f'mse:{f}']:.3g}" for f in FORMS) + " | "
              + " | ".join(shares) + " |")


# ------------------------------------------------------------------ 2. short distillations
def ranking(teacher_hr, student_logits_hr, alpha=ALPHA):
    """(overlap, mass recall) of the student's top-alpha HR keys against the teacher's, on the
    engine's score: per-head distribution over HR, head mean. teacher_hr: HR-renormalised [H, N]."""
    import torch

    t = teacher_hr.mean(0)
    s = torch.softmax(student_logits_hr, dim=-1).mean(0)
    k = max(1, int(round(alpha * t.shape[-1])))
    top_t = torch.topk(t, k).indices
    top_s = torch.topk(s, k).indices
    overlap = np.intersect1d(top_t.numpy(), top_s.numpy()).size / k
    recall = (t[top_s].sum() / t[top_t].sum()).item()
    return overlap, recall


def evaluate(rfm, samples, layers):
    """Common-unit held-out figures of one RFM: kl, kl_hr (means over pairs, heads, questions),
    top-25% overlap and mass recall at the scoring layer (mean over questions)."""
    import torch

    from rs_vqa_plugin.modeling.distill_loss import DistillLossSettings, distill_loss

    kl, kl_hr, overlap, recall = [], [], [], []
    rfm.eval()
    for s in samples:
        hr = torch.from_numpy(s.hr_mask)
        teacher = torch.from_numpy(s.teacher)
        with torch.no_grad():
            r = rfm.forward_attention_rows(torch.from_numpy(s.embeds), s.query_index)
        logits = torch.stack([r[l] for l in layers]).float()
        _, parts = distill_loss(teacher, logits, hr, DistillLossSettings(mse_form="probs"))
        kl.append(parts["kl"].item())
        kl_hr.append(parts["kl_hr"].item())
        t_hr = teacher[-1][:, hr]
        o, m = ranking(t_hr / t_hr.sum(-1, keepdim=True), logits[-1][:, hr])
        overlap.append(o)
        recall.append(m)
    return {"kl": float(np.mean(kl)), "kl_hr": float(np.mean(kl_hr)),
            "top25_overlap": float(np.mean(overlap)), "top25_mass_recall": float(np.mean(recall)),
            "n": int(np.mean([s.hr_mask.sum() for s in samples]))}


def run_distillations(bundle_dir: Path, out: Path, forms, steps: int, lr: float, seeds):
    import torch
    from transformers import AutoModelForCausalLM

    from rs_vqa_plugin.engine.bundle import load_bundle
    from rs_vqa_plugin.modeling.bundle_writer import replace_rfm
    from rs_vqa_plugin.modeling.distill_data import read_questions
    from rs_vqa_plugin.modeling.rfm_torch import RegionFocusTorch

    train = split_scenes("train", TRAIN_SCENES, out / "scenes")
    held = split_scenes("val", 1, out / "scenes")
    rfm_layers = load_bundle(bundle_dir).manifest.rfm["layers"]
    base = out / "base"
    if not base.is_dir():
        shutil.copytree(bundle_dir, base, ignore=shutil.ignore_patterns("*.png", "README.md"))
        lm = AutoModelForCausalLM.from_pretrained(base / "llm", dtype=torch.float32)
        replace_rfm(base, copied_rfm(lm, rfm_layers), made="copied")
    bundle = load_bundle(base)
    layers = sorted({rfm_layers[0], rfm_layers[-1]})
    builder = builder_for(bundle, layers)
    eval_q = read_questions(held)[:EVAL_QUESTIONS]
    evals = {name: samples_at(builder, eval_q, level, window, out / "samples" / "eval")
             for name, (level, window) in (("level 1", (1, 0)), ("deeper 9x9", EVAL_DEEP))}
    del builder
    start = RegionFocusTorch.load(base / "rfm.safetensors")
    results = {"start (copied RFM)": {"-": {k: evaluate(start, v, layers)
                                            for k, v in evals.items()}}}
    for form in forms:
        results[form] = {str(seed): one_run(base, train, out, form, steps, lr, seed, evals, layers)
                         for seed in seeds}
    return results


def one_run(base, train, out, form, steps, lr, seed, evals, layers):
    """Distil a copy of `base` with one MSE form (a finished run is reused) and evaluate it."""
    from rs_vqa_plugin.modeling.distill import DistillOptions, distill
    from rs_vqa_plugin.modeling.distill_loss import DistillLossSettings
    from rs_vqa_plugin.modeling.rfm_torch import RegionFocusTorch

    run = out / f"run-{form}-s{steps}-lr{lr:g}-seed{seed}"
    state = run / "distill_state" / "state.json"
    if not (state.is_file() and json.loads(state.read_text())["step"] >= steps
            and (run / "distill_state" / "rfm.safetensors").is_file()):
        shared = next(iter(sorted(out.glob("run-*/distill_state/samples"))), None)
        if run.exists():
            shutil.rmtree(run)
        shutil.copytree(base, run)
        if shared is not None:   # the teacher's samples of an earlier run: same data, same LLM
            shutil.copytree(shared, run / "distill_state" / "samples")
        t = time.perf_counter()
        opts = DistillOptions(steps=steps, lr=lr, save_every=steps, seed=seed, device="cpu",
                              heldout_fraction=0.2, loss=DistillLossSettings(mse_form=form))
        report = distill(run, train, None, opts)
        print(f"{form} seed {seed}: {steps} steps in {time.perf_counter() - t:.0f} s, own "
              f"held-out loss {report.heldout_before:.4g} -> {report.heldout_after:.4g}",
              file=sys.stderr)
    rfm = RegionFocusTorch.load(run / "distill_state" / "rfm.safetensors")
    figures = {k: evaluate(rfm, v, layers) for k, v in evals.items()}
    record = json.loads(state.read_text())      # the run's own held-out loss, in its form's units
    figures["own_loss"] = {"before": record["heldout_before"], "after": record["heldout_after"]}
    return figures


METRICS = (("kl", "KL full row", "{:.4f}"), ("kl_hr", "KL HR slice", "{:.4f}"),
           ("top25_overlap", "top-25% overlap", "{:.3f}"),
           ("top25_mass_recall", "top-25% mass recall", "{:.3f}"))


def print_runs(results, steps, lr):
    seeds = max(len(by_seed) for by_seed in results.values())
    print(f"\n### Held-out after {steps} steps (lr {lr:g}); val-split scene, {EVAL_QUESTIONS} "
          f"questions; top 25% of the engine's score; mean over {seeds} seeds [min, max]\n")
    print("| MSE form | sequences | N | " + " | ".join(m[1] for m in METRICS) + " |")
    print("|---|---|---:|" + "---:|" * len(METRICS))
    for form, by_seed in results.items():
        runs = list(by_seed.values())
        for seqs in (k for k in runs[0] if k != "own_loss"):
            cells = []
            for key, _, fmt in METRICS:
                values = [r[seqs][key] for r in runs]
                cell = fmt.format(np.mean(values))
                if len(values) > 1:
                    cell += f" [{fmt.format(min(values))}, {fmt.format(max(values))}]"
                cells.append(cell)
            print(f"| {form} | {seqs} | {runs[0][seqs]['n']} | " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seeds", default="0,1", help="sample orders, one run each")
    parser.add_argument("--forms", default=",".join(FORMS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "distill_loss"))
    parser.add_argument("--only", choices=("sizes", "runs"), default=None)
    args = parser.parse_args(argv)

    import torch

    from rs_vqa_plugin.modeling.quiet import quiet_model_libraries

    quiet_model_libraries()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.json"
    record = json.loads(results.read_text(encoding="utf-8")) if results.is_file() else {}
    if args.only in (None, "sizes"):
        record["sizes"] = measure_sizes(Path(args.model), out)
        print_sizes(record["sizes"])
    if args.only in (None, "runs"):
        forms = [f.strip() for f in args.forms.split(",") if f.strip()]
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        record["runs"] = run_distillations(Path(args.model), out, forms, args.steps, args.lr,
                                           seeds)
        record["runs_settings"] = {"steps": args.steps, "lr": args.lr, "seeds": seeds}
        print_runs(record["runs"], args.steps, args.lr)
    results.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
