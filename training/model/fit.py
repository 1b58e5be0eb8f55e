"""Training layer (model): fit an MFD model (or the plain-head baseline); the command is `training.train`.

`run` goes through named phases, in the order things happen: set up (distributed or not), `prepare_data`,
`build_model`, `build_optimisation`, `resume_state` (with --resume), then per epoch `train_epoch` and
`validate_and_save`, and finally the test evaluation of the kept checkpoint. The output folder is a checkpoint (`model.safetensors`,
`model_card.json`: the epoch with the best validation loss, as the reference keeps, or the last with
`train.keep: last`) plus `train_state.pt` (last weights, optimizers, epoch) so `--resume` continues where a run
stopped, and `history.jsonl` with one line of metrics per epoch.

The recipe defaults to the authors' (see `training.model.config`): Adam with amsgrad, constant lr, loss = BCE +
coeff_cov · independence terms; with an adversary (discriminator or R² predictors) the model steps on every
`penalty.generator_every`-th batch and the adversary on every batch, on detached features.

Multi-process: launch with `torchrun --nproc_per_node N -m training.train …`; gloo on CPU, nccl on GPU.
`train.batch_size` is the global batch; each rank takes batch_size / world_size windows.

Randomness is seeded from (seed, epoch, rank) at the start of every epoch, so a resumed run draws the same
batches, augmentations and dropout masks as one that never stopped.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from mfd_common.card import CARD_FILENAME, ModelCard, Track
from mfd_common.codec import MetadataCodec, is_missing

from ..data.sources import DataSource, load_source
from ..evaluation.metrics import json_safe, metrics_from_predictions
from .checkpoint import (TRAIN_STATE_FILENAME, WEIGHTS_FILENAME, load_checkpoint, load_train_state, save_checkpoint,
                         save_train_state)
from .config import Config, ConfigError
from .network import MFDModel, ModelConfig
from .penalty import IndependencePenalty, covariance_penalty

HISTORY_FILENAME = "history.jsonl"
VALIDATION_ORDER_SEED = 0   # the fixed random order of validation batches (see validation_loss)


# ---- setup ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Runtime:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup_runtime(device_pref: str, threads: int | None = None) -> Runtime:
    """Join the process group when launched by torchrun; choose the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device_pref.startswith("cuda") or (device_pref == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("train.device", "cuda requested but no CUDA device is available")
    use_deterministic_algorithms(use_cuda)
    if world > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo")
        rank, local_rank = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    else:
        rank, local_rank = 0, 0
    if use_cuda:
        device = torch.device(device_pref if ":" in device_pref else f"cuda:{local_rank}")
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        if threads is None and world > 1:  # don't let N processes each grab every core
            threads = max(1, (os.cpu_count() or 1) // world)
    if threads:
        torch.set_num_threads(threads)
    return Runtime(rank, world, device)


def seed_everything(seed: int) -> None:
    """Seed every generator a run draws from (python, numpy's global, torch's CPU and CUDA generators).

    Our own draws use explicit generators seeded from (seed, epoch, batch); this covers library code that uses the
    global ones (parameter initialisation, DistributedSampler, dropout).
    """
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def use_deterministic_algorithms(use_cuda: bool) -> None:
    """Ask torch for its deterministic kernels where it has them (warn, don't fail, where it has none).

    On CPU this makes a run repeat bit for bit on the same machine and thread count; across CPUs (other SIMD
    paths) and thread counts (other reduction orders) results still differ in the last bits, which 20 epochs of
    training amplify: see docs/reproducibility.md. cuBLAS needs a fixed workspace for deterministic GEMMs.
    """
    if use_cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


# ---- pieces of the step -----------------------------------------------------------------------------------

def metadata_dropout(codes: torch.Tensor, variable_masks: torch.Tensor, p: float) -> torch.Tensor:
    """Zero whole variables' code slices for random (track, variable) pairs.

    Why: at serving time a request may leave variables out, and the codec encodes "unspecified" as zeros. The
    model only learns what zeros mean if it sees them in training, for every variable.
    """
    if p <= 0:
        return codes
    drop = (torch.rand(codes.shape[0], variable_masks.shape[0], device=codes.device) < p).float()
    keep = 1.0 - (drop @ variable_masks).clamp(max=1.0)
    return codes * keep


def lr_lambda(total_steps: int, warmup: int, schedule: str = "cosine"):
    """`constant` (the reference), or linear warm-up then cosine decay to 10 % of the peak learning rate."""
    def factor(step: int) -> float:
        if schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def typed_metadata(codec: MetadataCodec, row: dict[str, Any]) -> dict[str, Any]:
    """TSV strings → JSON values for the card (numbers as numbers, a missing category as null)."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        variable = codec.by_name.get(name)
        if variable is None:
            continue
        if is_missing(value):
            out[name] = None
            continue
        if variable.type in ("float",):
            out[name] = float(value)
        elif variable.type == "int":
            out[name] = int(float(value))
        else:
            out[name] = value
    return out


def init_output_bias(model: MFDModel, positive_rate: np.ndarray) -> None:
    """Start every track's bias at the logit of its training positive rate.

    Peaks cover a few percent of bins; from a zero bias, Adam needs ~1/lr steps just to learn that base rate,
    which on a CPU-sized run is most of the budget. Starting there lets the first steps go to the sequence.
    """
    rate = np.clip(positive_rate, 1e-4, 1 - 1e-4)
    logit = torch.as_tensor(np.log(rate / (1 - rate)), dtype=torch.float32)
    with torch.no_grad():
        model.bias.copy_(logit)


def versions() -> dict[str, str]:
    try:
        from importlib.metadata import version
        package = version("mfd-serve")
    except Exception:  # not installed as a distribution (running from the source tree)
        package = "source"
    return {"mfd-serve": package, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def build_card(cfg: Config, data: DataSource, model: MFDModel, metrics: dict[str, Any]) -> ModelCard:
    biases = model.bias.detach().cpu().numpy().tolist()
    return ModelCard(
        model_name=cfg.name, seq_len=cfg.model.window_bases, onehot_order=cfg.model.seq_order,
        d_tech=model.d_tech, d_bio=model.d_bio,
        tracks=[Track(id=tid, metadata=typed_metadata(data.codec, row), bias=float(b))
                for tid, row, b in zip(data.tracks.ids, data.tracks.metadata, biases)],
        bias_rule=cfg.model.bias_rule,
        codec=data.codec.to_dict(), config=cfg.to_dict(), metrics=json_safe(metrics), versions=versions(),
    )


# ---- the run ----------------------------------------------------------------------------------------------

def evaluate_split(model: MFDModel, data: DataSource, split: str, cfg: Config, device: torch.device) -> dict:
    pred = data.predict(model, split, cfg, device)
    metrics = metrics_from_predictions(pred, data.tracks.ids, model.d_tech, forest=split == "test")
    metrics["loss"] = validation_loss(pred, model.d_tech, cfg)
    return metrics


def validation_loss(pred: dict[str, np.ndarray], d_tech: int, cfg: Config) -> float:
    """The reference's `val/loss`: forward-strand BCE + coeff_cov · covariance norm, averaged over batches.

    The covariance norm is taken on batches in a fixed random order, as the reference's validation loader samples
    them: batches of neighbouring windows (genome order) share sequence and would overstate the covariance.
    """
    logits, labels, f = (torch.as_tensor(pred[k], dtype=torch.float32) for k in ("logits_fwd", "labels", "features"))
    bce = float(F.binary_cross_entropy_with_logits(logits, labels))
    if cfg.model.head_kind == "baseline" or cfg.penalty.kind == "none":
        return bce
    f = f[torch.from_numpy(np.random.default_rng(VALIDATION_ORDER_SEED).permutation(len(f)))]
    size = cfg.train.batch_size
    norms = [float(covariance_penalty(f[i:i + size, d_tech:], f[i:i + size, :d_tech], cfg.penalty.norm == "frobenius"))
             for i in range(0, len(f), size) if len(f[i:i + size]) > 1]
    return bce + cfg.penalty.coeff * (float(np.mean(norms)) if norms else 0.0)


def run(cfg: Config, out: str | Path, *, resume: bool = False, force: bool = False,
        progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Train according to `cfg`, writing the checkpoint to `out`; returns the final metrics (rank 0)."""
    out = Path(out)
    rt = setup_runtime(cfg.train.device, cfg.train.threads)
    try:
        return _run(cfg, out, rt, resume=resume, force=force, progress=progress, stop_after=stop_after)
    finally:
        if rt.distributed:
            dist.destroy_process_group()


def _run(cfg: Config, out: Path, rt: Runtime, *, resume: bool, force: bool, progress: bool,
         stop_after: int | None = None) -> dict[str, Any]:
    """The run in its phases: data, model, optimisation, (resumed) state, the epoch loop, the test evaluation."""
    if not resume and not force and (out / WEIGHTS_FILENAME).exists():
        raise FileExistsError(f"{out} already holds a checkpoint; pass --resume to continue it or --force to "
                              f"start over")
    seed_everything(cfg.seed)
    data = prepare_data(cfg, rt)
    parts = build_model(cfg, data, rt)
    loop = build_optimisation(cfg, data, parts.model, rt)
    state = resume_state(out, cfg, parts, loop, rt) if resume else RunState()
    net = distribute(parts.model, cfg, rt)
    split_sizes = data.split_sizes()
    for epoch in range(state.start_epoch, cfg.train.epochs):
        train_stats = train_epoch(epoch, cfg, net, parts, loop, state, rt, progress)
        if rt.distributed:
            dist.barrier()
        if rt.main:
            validate_and_save(epoch, train_stats, cfg, data, parts, loop, state, out, rt.device)
        if rt.distributed:
            dist.barrier()
        if stop_after is not None and epoch + 1 - state.start_epoch >= stop_after and epoch + 1 < cfg.train.epochs:
            if rt.main:
                print(f"[mfd] stopping after {stop_after} epoch(s) of this run; continue with --resume", flush=True)
            break
    if rt.main and "test" in split_sizes and (out / WEIGHTS_FILENAME).exists():
        return evaluate_kept_checkpoint(out, data, cfg, rt.device)
    return state.metrics


# ---- the phases -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ModelParts:
    """The model and what its loss needs beside the batch: track codes, variable masks, the independence term."""

    model: MFDModel
    codes: torch.Tensor
    variable_masks: torch.Tensor
    independence: IndependencePenalty


@dataclasses.dataclass
class Optimisation:
    """Batches and steps: the sampler and loader of the training split, the optimizer and its schedule."""

    train_set: torch.utils.data.Dataset
    sampler: torch.utils.data.DistributedSampler
    loader: torch.utils.data.DataLoader
    local_batch: int
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR


@dataclasses.dataclass
class RunState:
    """What carries over from epoch to epoch (and, through train_state.pt, from a run to its --resume)."""

    start_epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_loss: float = math.inf
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)


def prepare_data(cfg: Config, rt: Runtime) -> DataSource:
    """The data source the config names (store or in-memory files), with its split sizes printed."""
    data = load_source(cfg)
    if rt.main:
        sizes = ", ".join(f"{k}: {v}" for k, v in data.split_sizes().items())
        print(f"[mfd] {len(data.tracks)} tracks, codec width {data.codec.width}; windows {sizes}", flush=True)
    return data


def build_model(cfg: Config, data: DataSource, rt: Runtime) -> ModelParts:
    """The model on the device (biases at the positive rates if asked), the codes and the independence term."""
    model = MFDModel(dataclasses.replace(cfg.model), data.codec, n_tracks=len(data.tracks),
                     track_codes=torch.as_tensor(data.codes)).to(rt.device)
    if cfg.train.init_output_bias:
        init_output_bias(model, data.positive_rate())
    codes = torch.as_tensor(data.codes, device=rt.device)
    variable_masks = torch.as_tensor(np.stack([data.codec.variable_mask(v.name) for v in data.codec.variables]),
                                     dtype=torch.float32, device=rt.device)
    penalty_kind = "none" if cfg.model.head_kind == "baseline" else cfg.penalty.kind
    independence = IndependencePenalty(penalty_kind, model.d_bio, model.d_tech,
                                       frobenius=cfg.penalty.norm == "frobenius", hidden=cfg.penalty.hidden,
                                       layers=cfg.penalty.layers, lr=cfg.penalty.lr).to(rt.device)
    return ModelParts(model, codes, variable_masks, independence)


def build_optimisation(cfg: Config, data: DataSource, model: MFDModel, rt: Runtime) -> Optimisation:
    """This rank's sampler and loader, the steps per epoch, the optimizer and the learning-rate schedule."""
    train_set = data.train_set
    local_batch = max(2, cfg.train.batch_size // rt.world)
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=rt.world, rank=rt.rank, shuffle=True,
                                                  seed=cfg.seed, drop_last=True)
    loader = data.train_loader(cfg, local_batch, sampler)
    steps_per_epoch = len(loader) if cfg.train.max_steps_per_epoch is None else min(len(loader),
                                                                                    cfg.train.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ConfigError("train.batch_size", f"larger than the training split ({len(train_set)} windows)")
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.optimizer == "adam_amsgrad":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr,
                                                            weight_decay=cfg.train.weight_decay, amsgrad=True)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, min(100, total_steps // 10 + 1), cfg.train.schedule))
    return Optimisation(train_set, sampler, loader, local_batch, steps_per_epoch, optimizer, scheduler)


def resume_state(out: Path, cfg: Config, parts: ModelParts, loop: Optimisation, rt: Runtime) -> RunState:
    """Load train_state.pt into the model, optimizers and schedule; the epoch, step and history it reached."""
    state = load_train_state(out)
    if state is None:
        raise FileNotFoundError(f"--resume: {out / TRAIN_STATE_FILENAME} does not exist")
    saved_model_cfg = dataclasses.asdict(ModelConfig.from_dict(json.loads(state["config"])["model"]))
    if saved_model_cfg != dataclasses.asdict(cfg.model):
        raise ConfigError("model", f"differs from the checkpoint being resumed ({out}); resume with the same "
                                   f"model config")
    parts.model.load_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])  # restores the current lr; the scheduler continues from it
    loop.scheduler.load_state_dict(state["scheduler"])
    parts.independence.load_state_dict(state["independence"])
    if parts.independence.optimizer is not None:
        parts.independence.optimizer.load_state_dict(state["independence_optimizer"])
    history = json.loads(state["history"])
    resumed = RunState(int(state["epoch"]), int(state["step"]), history, float(state.get("best_loss", math.inf)),
                       history[-1]["metrics"] if history else {})
    if rt.main:
        print(f"[mfd] resuming {out} at epoch {resumed.start_epoch} (step {resumed.step})", flush=True)
    return resumed


def distribute(model: MFDModel, cfg: Config, rt: Runtime) -> torch.nn.Module:
    """The module the loop calls: the model itself, or its DistributedDataParallel wrapper under torchrun."""
    if not rt.distributed:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
        find_unused_parameters=cfg.model.head_kind == "mfd")


def train_epoch(epoch: int, cfg: Config, net: torch.nn.Module, parts: ModelParts, loop: Optimisation,
                state: RunState, rt: Runtime, progress: bool) -> dict[str, float]:
    """One epoch of steps (seeded from seed, epoch and rank); returns the mean losses and the throughput."""
    model, independence = parts.model, parts.independence
    seed_everything(cfg.seed * 1000 + epoch * 10 + rt.rank)
    loop.sampler.set_epoch(epoch)
    loop.train_set.set_epoch(epoch)
    net.train()
    sums = {"loss": 0.0, "task": 0.0, "penalty": 0.0, "adversary": 0.0}
    started = time.perf_counter()
    bar = tqdm(total=loop.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
               disable=not (progress and rt.main), leave=False, dynamic_ncols=True, file=sys.stderr)
    for i, (tokens, labels) in enumerate(loop.loader):
        if i >= loop.steps_per_epoch:
            break
        tokens, labels = tokens.to(rt.device, non_blocking=True), labels.to(rt.device, non_blocking=True)
        output = net(tokens, metadata_dropout(parts.codes, parts.variable_masks, cfg.train.metadata_dropout))
        task = F.binary_cross_entropy_with_logits(output["logits"], labels)
        f = output["features"]
        f_tech, f_bio = f[:, :model.d_tech], f[:, model.d_tech:]
        terms = independence.model_term(f_bio, f_tech)
        penalty = sum(terms.values(), torch.zeros((), device=rt.device))
        ramp = min(1.0, (state.step + 1) / cfg.penalty.warmup_steps) if cfg.penalty.warmup_steps else 1.0
        loss = task + cfg.penalty.coeff * ramp * penalty
        loop.optimizer.zero_grad(set_to_none=True)
        if not independence.has_adversary or i % cfg.penalty.generator_every == 0:
            loss.backward()
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            loop.optimizer.step()
        sums["adversary"] += independence.adversary_step(f_bio, f_tech)
        loop.scheduler.step()
        state.step += 1
        sums["loss"] += float(loss.detach())
        sums["task"] += float(task.detach())
        sums["penalty"] += float(penalty.detach())
        bar.update(1)
        bar.set_postfix(loss=f"{sums['loss'] / (i + 1):.4f}", pen=f"{sums['penalty'] / (i + 1):.3f}")
    bar.close()
    elapsed = time.perf_counter() - started
    train_stats = {k: v / loop.steps_per_epoch for k, v in sums.items()}
    train_stats["windows_per_s"] = loop.steps_per_epoch * loop.local_batch * rt.world / elapsed
    return train_stats


def validate_and_save(epoch: int, train_stats: dict[str, float], cfg: Config, data: DataSource, parts: ModelParts,
                      loop: Optimisation, state: RunState, out: Path, device: torch.device) -> None:
    """Rank 0 after an epoch: validate, keep the checkpoint if it improved (else only the resumable state), and
    append the epoch's line to history.jsonl."""
    model, independence = parts.model, parts.independence
    epoch_metrics = {"epoch": epoch + 1, "step": state.step, "train": train_stats,
                     "val": evaluate_split(model, data, "val", cfg, device)}
    state.history.append({"epoch": epoch + 1, "metrics": epoch_metrics})
    val = epoch_metrics["val"]
    improved = val["loss"] < state.best_loss or cfg.train.keep == "last"
    if improved:
        state.best_loss, state.metrics = min(state.best_loss, val["loss"]), epoch_metrics
    print(f"[mfd] epoch {epoch + 1}/{cfg.train.epochs} step {state.step}: loss {train_stats['loss']:.4f} "
          f"(task {train_stats['task']:.4f}, penalty {train_stats['penalty']:.4f}) "
          f"{train_stats['windows_per_s']:.0f} windows/s | val loss {val['loss']:.4f}"
          f"{' (best)' if improved else ''} AUROC {val['auroc_mean']:.4f} "
          f"AUPRC {val['auprc_mean']:.4f} | bio–tech mean |corr| "
          f"{val['independence']['mean_abs_corr']:.4f}", flush=True)
    train_state = {
        "epoch": epoch + 1, "step": state.step, "model": model.state_dict(), "optimizer": loop.optimizer.state_dict(),
        "scheduler": loop.scheduler.state_dict(), "config": json.dumps(cfg.to_dict()),
        "history": json.dumps(state.history), "best_loss": state.best_loss,
        "independence": independence.state_dict(),
    }
    if independence.optimizer is not None:
        train_state["independence_optimizer"] = independence.optimizer.state_dict()
    if improved:
        save_checkpoint(model, build_card(cfg, data, model, state.metrics), out, train_state)
    else:
        save_train_state(out, train_state)
    with open(out / HISTORY_FILENAME, "a") as handle:
        handle.write(json.dumps(json_safe({"epoch": epoch + 1, "step": state.step, "train": train_stats, "val": {
            k: v for k, v in epoch_metrics["val"].items() if k != "per_track"}}), allow_nan=False) + "\n")


def evaluate_kept_checkpoint(out: Path, data: DataSource, cfg: Config, device: torch.device) -> dict[str, Any]:
    """Test metrics of the checkpoint that was kept (best val/loss), written into its card."""
    kept, card = load_checkpoint(out)
    kept.to(device)
    card.metrics = {**card.metrics, "test": json_safe(evaluate_split(kept, data, "test", cfg, device))}
    card.save(out / CARD_FILENAME)
    return card.metrics
