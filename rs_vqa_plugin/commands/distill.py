"""`distill BUNDLE DATA.jsonl`: train a bundle's RFM against its own LLM's attention (METHOD §4)."""

from __future__ import annotations

HELP = ("distil the RFM of a bundle against its LLM's attention on LRS-VQA style questions "
        "(thumbnail + level 1), with checkpoints, resume and re-export of rfm.onnx")


def add_arguments(parser):
    from ..modeling.distill import DistillOptions
    from ..modeling.distill_loss import MSE_FORMS

    d = DistillOptions()
    parser.add_argument("bundle", help="model bundle whose RFM is trained")
    parser.add_argument("data", help="LRS-VQA style .jsonl (question_id, image, text)")
    parser.add_argument("--images", default=None,
                        help="folder the jsonl's image paths are relative to (default: its folder)")
    parser.add_argument("--out", default=None,
                        help="write the distilled bundle here (a copy); default: update BUNDLE")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"optimiser steps ({d.steps})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate ({d.lr:g})")
    parser.add_argument("--save-every", type=int, default=d.save_every,
                        help=f"checkpoint every N steps ({d.save_every})")
    parser.add_argument("--heldout", type=float, default=d.heldout_fraction,
                        help=f"fraction of questions held out to measure the loss "
                             f"({d.heldout_fraction:g})")
    parser.add_argument("--pairs", choices=("first_last", "all"), default=d.pairs,
                        help="layer pairs distilled (paper: first_last)")
    parser.add_argument("--lambda-hr", type=float, default=d.loss.lambda_hr)
    parser.add_argument("--lambda-mse", type=float, default=d.loss.lambda_mse)
    parser.add_argument("--lambda-kl", type=float, default=d.loss.lambda_kl)
    parser.add_argument("--mse-form", choices=tuple(MSE_FORMS), default=d.loss.mse_form,
                        help="what the MSE term compares over the HR slice: centred_log (centred "
                             "log-attention, the default), scaled_probs (N x probabilities) or "
                             "probs (probabilities; about 1/N^2 of the others, as first "
                             "implemented)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in OUT/distill_state (--steps is the total)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def run(args) -> int:
    import json
    import sys

    from ..modeling.distill import DistillOptions, distill
    from ..modeling.distill_loss import DistillLossSettings
    from ..modeling.quiet import quiet_model_libraries

    quiet_model_libraries()
    options = DistillOptions(
        steps=args.steps, lr=args.lr, save_every=args.save_every,
        heldout_fraction=args.heldout, seed=args.seed, pairs=args.pairs,
        loss=DistillLossSettings(lambda_kl=args.lambda_kl, lambda_hr=args.lambda_hr,
                                 lambda_mse=args.lambda_mse, mse_form=args.mse_form),
        images_dir=args.images, device=args.device, resume=args.resume)
    report = distill(args.bundle, args.data, out_dir=args.out, options=options,
                     events=_print_progress)
    result = {"bundle": str(report.bundle), "steps": report.steps,
              "heldout_loss_before": report.heldout_before,
              "heldout_loss_after": report.heldout_after,
              "train_questions": report.train_questions,
              "heldout_questions": report.heldout_questions}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"held-out distillation loss {report.heldout_before:.4g} -> "
              f"{report.heldout_after:.4g} after {report.steps} steps; bundle: {report.bundle}")
    sys.stdout.flush()
    return 0


def _print_progress(event) -> None:
    import sys

    if event.get("type") == "progress":
        print(f"[{event['stage']:>8} {event['fraction'] * 100:3.0f}%] {event['message']}",
              file=sys.stderr)
