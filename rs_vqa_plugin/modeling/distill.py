"""Distil a bundle's RFM against its own LLM's attention (METHOD §4): prepare samples, train with
Adam, checkpoint periodically into OUT/distill_state/, resume, re-export rfm.onnx, update the
manifest (rfm.made = 'distilled', loss settings, held-out loss before/after)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..engine.errors import BundleError, Cancelled, InputError
from ..engine.progress import CancelToken, EventSink, emit, progress_event
from .distill_loss import DistillLossSettings, distill_loss

STATE_DIR = "distill_state"
STATE_FILE = "state.json"
RFM_CHECKPOINT = "rfm.safetensors"
OPTIMIZER_CHECKPOINT = "optimizer.safetensors"


@dataclass
class DistillOptions:
    steps: int = 200                 # optimiser steps in total (one question per step)
    lr: float = 2e-5
    save_every: int = 50
    heldout_fraction: float = 0.2
    seed: int = 0
    pairs: str = "first_last"        # the paper distils the first and last layer pairs
    loss: DistillLossSettings = field(default_factory=DistillLossSettings)
    images_dir: Optional[str] = None
    device: str = "auto"
    resume: bool = False


@dataclass
class DistillReport:
    bundle: Path
    steps: int
    heldout_before: float
    heldout_after: float
    train_losses: List[float]
    train_questions: int
    heldout_questions: int


# ------------------------------------------------------------------ checkpoints (no pickle)
def save_optimizer(optimizer, path: Path) -> None:
    """Adam state as safetensors (tensors) + JSON metadata (hyper-parameters)."""
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            tensors[f"{index}.{name}"] = value.detach().cpu().reshape(-1).clone().contiguous()
    save_file(tensors, str(path), metadata={"param_groups": json.dumps(state["param_groups"])})


def load_optimizer(optimizer, path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        groups = json.loads(handle.metadata()["param_groups"])
    tensors = load_file(str(path))
    template = optimizer.state_dict()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state: Dict[int, dict] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        index = int(index)
        shape = () if name == "step" else params[index].shape
        state.setdefault(index, {})[name] = value.reshape(shape)
    if len(groups) != len(template["param_groups"]):
        raise InputError(f"{path} does not fit this RFM's optimiser; delete the state folder to "
                         "start over.")
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ------------------------------------------------------------------ the run
class _Run:
    def __init__(self, events: Optional[EventSink], cancel: Optional[CancelToken]):
        self.events, self.cancel = events, cancel

    def progress(self, stage: str, fraction: float, message: str = "") -> None:
        emit(self.events, progress_event(stage, fraction, message))

    def check(self) -> None:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()


class _LazyBuilder:
    """Creates the SampleBuilder (vision + LLM) only when a sample is not cached yet."""

    def __init__(self, make, layers, cancel):
        self._make, self.layers, self.cancel = make, list(layers), cancel
        self._builder, self.device = None, None

    def build(self, question):
        if self._builder is None:
            self._builder = self._make()
            self.device = self._builder.llm.device
        return self._builder.build(question)

    def release(self) -> None:
        self._builder = None


def _torch_device(device: str) -> str:
    from ..engine.llm import resolve_device

    return resolve_device(device)


def _prepare_output(src: Path, out: Path, resume: bool) -> Path:
    state = out / STATE_DIR / STATE_FILE
    if resume:
        if not state.is_file():
            raise InputError(f"Nothing to resume: {state} does not exist (run without --resume "
                             "to start a distillation).")
        return out
    if state.is_file():
        raise InputError(f"{out / STATE_DIR} holds an earlier distillation run: pass --resume to "
                         "continue it, or delete that folder to start over.")
    if out != src:
        if out.exists() and any(out.iterdir()):
            raise InputError(f"{out} already exists and is not empty: choose another --out.")
        if out.exists():
            out.rmdir()
        shutil.copytree(src, out, ignore=shutil.ignore_patterns(STATE_DIR, ".*"))
    return out


def _student_rows(rfm, sample, layers, device):
    import torch

    embeds = torch.from_numpy(sample.embeds).to(device)
    positions = None if sample.positions is None else torch.from_numpy(sample.positions).to(device)
    rows = rfm.forward_attention_rows(embeds, int(sample.query_index), positions)
    return torch.stack([rows[l] for l in layers])


def _loss(rfm, sample, layers, settings, device):
    import torch

    student = _student_rows(rfm, sample, layers, device)
    teacher = torch.from_numpy(sample.teacher).to(device)
    return distill_loss(teacher, student, torch.from_numpy(sample.hr_mask).to(device), settings)


def _evaluate(rfm, paths, layers, settings, device) -> float:
    import torch

    from .distill_data import Sample

    with torch.no_grad():
        losses = [float(_loss(rfm, Sample.load(p), layers, settings, device)[0]) for p in paths]
    return float(np.mean(losses))


def _order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one pass over the training set (fixed by seed: resumable)."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Session:
    """One distillation run on one output bundle: state file, samples, student, optimiser."""

    def __init__(self, src: Path, out: Path, data_jsonl, opts: DistillOptions, run: _Run):
        from ..engine.bundle import load_bundle
        from .distill_data import read_questions, split_heldout

        self.opts, self.run, self.src, self.out = opts, run, src, out
        self.data_name = Path(data_jsonl).name
        questions = read_questions(data_jsonl, opts.images_dir)
        self.train_q, self.held_q = split_heldout(questions, opts.heldout_fraction)
        self.bundle = load_bundle(out)
        if self.bundle.rfm_weights_path is None:
            raise BundleError(f"{out / 'rfm.safetensors'} is missing: the bundle has no trainable "
                              "RFM weights; re-create it with `python -m rs_vqa_plugin convert`.")
        self.dir = out / STATE_DIR
        self.dir.mkdir(exist_ok=True)
        self.state_path = self.dir / STATE_FILE
        ids = [q.question_id for q in questions]
        if opts.resume:
            self.state = json.loads(self.state_path.read_text(encoding="utf-8"))
            for key, value in (("questions", ids), ("pairs", opts.pairs), ("seed", opts.seed)):
                if self.state.get(key) != value:
                    raise InputError(f"The run in {self.dir} was started with other {key} than "
                                     "given now: resume with the same data and settings.")
            started = DistillLossSettings.from_dict(self.state.get("loss", opts.loss.to_dict()))
            if started != opts.loss:
                raise InputError(f"The run in {self.dir} was started with the loss {started} "
                                 f"but is resumed with {opts.loss}: resume with the same loss "
                                 "settings (--mse-form, --lambda-*).")
        else:
            self.state = {"questions": ids, "pairs": opts.pairs, "seed": opts.seed, "step": 0,
                          "losses": [], "data": self.data_name, "source_bundle": src.name}
        self.state.update({"train": len(self.train_q), "heldout": len(self.held_q),
                           "lr": opts.lr, "loss": opts.loss.to_dict()})
        self.write_state()

    def write_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1), encoding="utf-8")
        tmp.replace(self.state_path)

    def student(self):
        """The RFM to train: the last checkpoint of a resumed run, else the bundle's."""
        from .rfm_torch import RegionFocusTorch

        checkpoint = self.dir / RFM_CHECKPOINT
        use = checkpoint if self.opts.resume and checkpoint.is_file() else \
            self.bundle.rfm_weights_path
        if self.opts.resume and use != checkpoint and self.state["step"]:
            raise InputError(f"{checkpoint} is missing though {self.state_path} records step "
                             f"{self.state['step']}: delete {self.dir} to start over.")
        return RegionFocusTorch.load(use)

    def prepare(self, layers) -> str:
        """Build or reuse the samples; returns the torch device the teacher ran on."""
        from ..engine.llm import LanguageModel
        from ..engine.vision import VisionEncoder
        from .distill_data import SampleBuilder, prepare_samples

        opts, run, bundle = self.opts, self.run, self.bundle

        def make_builder():
            run.progress("prepare", 0.0, "loading the vision encoder and the language model")
            llm = LanguageModel(bundle, device=opts.device)
            # Overviews go where the engine puts them (beside the image or the shared cache),
            # so later questions on the same images reuse them.
            return SampleBuilder(bundle, VisionEncoder(bundle, device=opts.device), llm, layers,
                                 cancel=run.cancel)

        builder = _LazyBuilder(make_builder, layers, run.cancel)   # a resumed run may need no teacher
        self.train_paths = prepare_samples(builder, self.train_q, self.dir / "samples" / "train",
                                           lambda f, m: run.progress("prepare", 0.9 * f, m))
        self.held_paths = prepare_samples(builder, self.held_q, self.dir / "samples" / "heldout",
                                          lambda f, m: run.progress("prepare", 0.9 + 0.1 * f, m))
        device = builder.device or _torch_device(opts.device)
        builder.release()   # the teacher's work is done; free its memory for training
        _free_memory()
        return device

    def train(self, rfm, layers, device) -> None:
        """Adam steps from state['step'] to opts.steps; checkpoints every save_every steps and on
        cancellation."""
        import torch

        from .distill_data import Sample

        opts, state, settings = self.opts, self.state, self.opts.loss
        optimizer = torch.optim.Adam(rfm.parameters(), lr=opts.lr)
        if opts.resume and (self.dir / OPTIMIZER_CHECKPOINT).is_file():
            load_optimizer(optimizer, self.dir / OPTIMIZER_CHECKPOINT)
            for group in optimizer.param_groups:
                group["lr"] = opts.lr
        if "heldout_before" not in state:
            rfm.eval()
            state["heldout_before"] = _evaluate(rfm, self.held_paths, layers, settings, device)

        def checkpoint() -> None:
            rfm.save(self.dir / (RFM_CHECKPOINT + ".tmp"))
            save_optimizer(optimizer, self.dir / (OPTIMIZER_CHECKPOINT + ".tmp"))
            (self.dir / (RFM_CHECKPOINT + ".tmp")).replace(self.dir / RFM_CHECKPOINT)
            (self.dir / (OPTIMIZER_CHECKPOINT + ".tmp")).replace(self.dir / OPTIMIZER_CHECKPOINT)
            self.write_state()

        rfm.train()
        start, count = int(state["step"]), len(self.train_paths)
        self.run.progress("distill", start / opts.steps, f"held-out loss before: "
                          f"{state['heldout_before']:.4g}; from step {start}")
        try:
            for step in range(start, opts.steps):
                self.run.check()
                epoch, position = divmod(step, count)
                sample = Sample.load(self.train_paths[_order(count, opts.seed, epoch)[position]])
                loss, parts = _loss(rfm, sample, layers, settings, device)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                state["step"] = step + 1
                state["losses"].append(loss.item())
                if state["step"] % opts.save_every == 0:
                    checkpoint()
                self.run.progress("distill", state["step"] / opts.steps,
                                  f"step {state['step']}/{opts.steps}: loss {loss.item():.4g} "
                                  f"(kl {parts['kl'].item():.4g}, kl_hr "
                                  f"{parts['kl_hr'].item():.4g}, mse_hr "
                                  f"{parts['mse_hr'].item():.4g})")
        except Cancelled:
            checkpoint()   # what was learnt so far is kept; --resume continues from here
            raise
        checkpoint()

    def finish(self, rfm, layers, device) -> DistillReport:
        """Held-out loss after training, rfm.onnx re-export and the manifest's record."""
        from ..engine.bundle import load_bundle
        from .bundle_writer import replace_rfm

        state, opts = self.state, self.opts
        rfm.eval()
        after = _evaluate(rfm, self.held_paths, layers, opts.loss, device)
        state["heldout_after"] = after
        self.write_state()
        self.run.progress("export", 0.0, f"held-out loss {state['heldout_before']:.4g} -> "
                                         f"{after:.4g}; exporting rfm.onnx")
        record = dict(opts.loss.to_dict(), steps=int(state["step"]), lr=opts.lr,
                      pairs=opts.pairs, distilled_layers=layers, seed=opts.seed,
                      data=state["data"], train_questions=len(self.train_q),
                      heldout_questions=len(self.held_q),
                      heldout_loss_before=state["heldout_before"], heldout_loss_after=after,
                      input="thumbnail + level 1",
                      teacher="the bundle's LLM: eager attention rows of the query token")
        fp16 = bool((self.bundle.manifest.vision or {}).get("fp16", False))
        replace_rfm(self.out, rfm.cpu().float(), made="distilled", loss=record, fp16=fp16,
                    provenance_note=f"RFM distilled for {state['step']} steps on {state['data']}")
        load_bundle(self.out)
        self.run.progress("export", 1.0, f"bundle updated: {self.out}")
        return DistillReport(bundle=self.out, steps=int(state["step"]),
                             heldout_before=float(state["heldout_before"]), heldout_after=after,
                             train_losses=list(state["losses"]),
                             train_questions=len(self.train_q),
                             heldout_questions=len(self.held_q))


def distill(bundle_dir, data_jsonl, out_dir=None, options: Optional[DistillOptions] = None,
            events: Optional[EventSink] = None, cancel: Optional[CancelToken] = None
            ) -> DistillReport:
    """Train the RFM of `bundle_dir` (or of its copy `out_dir`) on the questions of `data_jsonl`:
    thumbnail + level-1 sequences, teacher = the bundle's own LLM, the paper's loss."""
    from ..engine.bundle import load_bundle
    from .distill_data import read_questions, teacher_layers

    opts = options or DistillOptions()
    if opts.steps < 1 or opts.save_every < 1 or not opts.lr > 0:
        raise InputError("steps and save-every must be at least 1 and lr positive.")
    src = Path(bundle_dir).expanduser().resolve()
    load_bundle(src)
    read_questions(data_jsonl, opts.images_dir)          # fail on bad data before copying
    out = _prepare_output(src, Path(out_dir).expanduser().resolve() if out_dir else src,
                          opts.resume)
    session = _Session(src, out, data_jsonl, opts, _Run(events, cancel))
    rfm = session.student()
    layers = teacher_layers(rfm.config.layers, opts.pairs)
    device = session.prepare(layers)
    rfm = rfm.to(device)
    session.train(rfm, layers, device)
    return session.finish(rfm, layers, device)
