"""The one training loop: Adam, seeded batches, a checkpoint every epoch, resume, and a NaN guard.

Reproducible on CPU: batch order comes from (seed, epoch) and the torch RNG state is saved in every checkpoint,
so a run resumed from epoch k ends with the same weights as one that was never interrupted.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from .. import seeds
from ..config import TrainConfig, eval_batch
from ..errors import RepbenchError, first_line
from ..files import atomic_save

CHECKPOINT_FORMAT = "repbench-checkpoint-v1"
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # (uint8 batch, generator) -> uint8 batch
LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]  # (module, uint8 batch) -> mean nats per image
# Training data is a uint8 image tensor, or a tuple of tensors aligned with the images (images first), e.g.
# (images, labels, labelled mask) for a semi-supervised learner; batches keep the same structure.
TrainData = "torch.Tensor | tuple[torch.Tensor, ...]"
CurveFn = Callable[[torch.nn.Module, torch.Tensor], dict]  # (module, uint8 batch) -> {name: batch mean}


class NonFiniteLoss(RepbenchError):
    pass


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically, so an interruption mid-write never leaves a half-written checkpoint."""
    atomic_save({"format": CHECKPOINT_FORMAT, **payload}, path)


def finish_checkpoint(path: Path) -> None:
    """Drop what only resuming needs (Adam's moments, RNG states) from a finished run's checkpoint: two thirds
    of its size. A finished run is never resumed; more epochs are another configuration."""
    state = load_checkpoint(path)
    if state.get("finished") and "optimizer" in state:
        atomic_save({k: v for k, v in state.items() if k not in ("optimizer", "rng", "cuda_rng")}, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise RepbenchError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise RepbenchError(f"checkpoint {path} is corrupt or not a repbench checkpoint "
                            f"({type(exc).__name__}: {first_line(exc, 120)})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise RepbenchError(f"checkpoint {path} is not a repbench checkpoint (format {CHECKPOINT_FORMAT} expected)")
    return payload


def make_optimizer(module: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam; the fused kernel where torch has one (same update, one pass over the parameters)."""
    return torch.optim.Adam(module.parameters(), lr=lr, fused=device.type in ("cpu", "cuda"))


def optimizer_state_by_name(module: torch.nn.Module, model_state: dict, opt_state: dict, path: Path) -> dict:
    """Adam's saved state re-indexed to `module`'s parameter order.

    Optimizer state is stored by parameter position, and positions follow the order in which a module's
    attributes were assigned, which a code change can reorder. The model's state dict keeps the save-time order
    by name, so the positions are matched through names; a shape mismatch is a clear error, not a crash in
    the fused kernel."""
    params = dict(module.named_parameters())
    saved = [k for k in model_state if k in params]
    if sorted(saved) != sorted(params) or len(opt_state["param_groups"]) != 1:
        raise RepbenchError(f"checkpoint {path} holds optimizer state for other parameters than this model's")
    position = {name: i for i, name in enumerate(params)}
    state = {}
    for i, entry in opt_state["state"].items():
        name = saved[int(i)]
        if any(torch.is_tensor(v) and v.dim() and v.shape != params[name].shape for v in entry.values()):
            raise RepbenchError(f"checkpoint {path}: optimizer state of '{name}' does not match its shape")
        state[position[name]] = entry
    group = {**opt_state["param_groups"][0], "params": list(range(len(params)))}
    return {"state": state, "param_groups": [group]}


def batch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seeds.batch_order(seed, epoch)))


def evaluate(module: torch.nn.Module, loss_fn: LossFn, x: torch.Tensor, batch_size: int) -> float:
    """Mean loss in nats per image over x, in eval mode; the RNG state is left as it was."""
    was_training = module.training
    module.eval()
    total = torch.zeros((), dtype=torch.float64, device=x.device)  # read back once, not per batch
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []), torch.inference_mode():
        for i in range(0, len(x), batch_size):
            total += loss_fn(module, x[i:i + batch_size]).double() * len(x[i:i + batch_size])
    module.train(was_training)
    return total.item() / len(x)


def curve_point(module: torch.nn.Module, curves: CurveFn, x: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Image-weighted means of `curves` over x, in eval mode; the RNG state is left as it was."""
    was_training = module.training
    module.eval()
    sums: dict[str, torch.Tensor | float] = {}  # on the device where a curve gives a tensor: read back once
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []), torch.inference_mode():
        for i in range(0, len(x), batch_size):
            batch = x[i:i + batch_size]
            for k, v in curves(module, batch).items():
                v = v.double() if torch.is_tensor(v) else float(v)
                sums[k] = sums.get(k, 0.0) + v * len(batch)
    module.train(was_training)
    return {k: float(v) / len(x) for k, v in sums.items()}


def train(module: torch.nn.Module, loss_fn: LossFn, train_x: torch.Tensor, *, cfg: TrainConfig, seed: int,
          checkpoint: Path | None = None, resume: bool = False, test_x: torch.Tensor | None = None,
          meta: dict[str, Any] | None = None, on_epoch: Callable[[dict], None] | None = None,
          progress: bool = True, nats_per_unit: float = 1.0, augment: Augment | None = None,
          curves: CurveFn | None = None) -> list[dict]:
    """Train `module` in place; return the per-epoch history [{epoch, train_loss, test_loss, ...}].

    `loss_fn` returns the mean loss in nats per image; the history reports it divided by `nats_per_unit`
    (D ln 2 turns it into bits/dim). `train_x`/`test_x` are uint8 tensors already on the module's device.
    `augment` transforms training batches only, with a generator seeded by (seed, epoch) so resumes repeat it.
    `curves` adds values of the test images to the history every `cfg.curve_every` epochs and at the last.
    `on_epoch` gets each epoch's record after its checkpoint, and on a resume the last restored epoch's again.
    `train_x` may be a tuple of aligned tensors, images first (see TrainData)."""
    device = images_of(train_x).device
    opt = make_optimizer(module, cfg.lr, device)
    history, start = restore(module, opt, checkpoint, device) if resume and checkpoint is not None and \
        checkpoint.exists() else ([], 0)
    if start == 0:
        torch.manual_seed(seeds.training(seed))
    elif history and on_epoch is not None:
        # the last restored epoch again: an interruption between its checkpoint and its on_epoch kept it from
        # the tracker, which would then lack that epoch for good
        on_epoch(history[-1])
    for epoch in range(start + 1, cfg.epochs + 1):
        record = {"epoch": epoch, "train_loss": one_epoch(module, opt, loss_fn, train_x, cfg, seed, epoch, checkpoint,
                                                          progress, augment, nats_per_unit)}
        if test_x is not None:
            batch = eval_batch(cfg.eval_batch_size, device)
            record["test_loss"] = evaluate(module, loss_fn, test_x, batch) / nats_per_unit
            if curves is not None and cfg.curve_every and (epoch % cfg.curve_every == 0 or epoch == cfg.epochs):
                record.update(curve_point(module, curves, test_x, batch))
        if not all(torch.isfinite(p).all() for p in module.parameters()):
            raise NonFiniteLoss(_nan_message(float("nan"), epoch, "end", checkpoint, start_epoch=epoch - 1))
        history.append(record)
        if checkpoint is not None:
            save_state(checkpoint, module, opt, cfg, epoch, history, meta, device)
        if on_epoch is not None:
            on_epoch(record)
        if progress:
            tqdm.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
    return history


def restore(module: torch.nn.Module, opt: torch.optim.Optimizer, checkpoint: Path,
            device: torch.device) -> tuple[list[dict], int]:
    """Load weights, optimizer state and RNG state of an interrupted run; return (history, last epoch)."""
    state = load_checkpoint(checkpoint)
    module.load_state_dict(state["model"])
    if "optimizer" not in state:  # a finished run's checkpoint keeps only the weights: nothing left to train
        return list(state.get("history", [])), state.get("epoch", len(state.get("history", [])))
    opt.load_state_dict(optimizer_state_by_name(module, state["model"], state["optimizer"], checkpoint))
    torch.set_rng_state(state["rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return list(state["history"]), state["epoch"]


LOG_EVERY = 10  # steps between reads of the running loss, and of the non-finite flag, back to the host


def one_epoch(module: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: LossFn, train_x: torch.Tensor,
              cfg: TrainConfig, seed: int, epoch: int, checkpoint: Path | None, progress: bool,
              augment: Augment | None, nats_per_unit: float = 1.0) -> float:
    """One pass over the training images in the (seed, epoch) order; the mean loss per image in nats divided by
    `nats_per_unit`. The loss stays on the device: a GPU is not made to wait for the host every step."""
    module.train()
    images = images_of(train_x)
    order = batch_order(len(images), seed, epoch).to(images.device)
    bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress,
               leave=False, unit="batch", dynamic_ncols=True)
    guard, seen = NanGuard(images.device, epoch, checkpoint), 0
    aug_gen = torch.Generator().manual_seed(seeds.augmentation(seed, epoch))
    try:
        for step, i in enumerate(bar):
            idx = order[i:i + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a batch of one
                continue
            loss = loss_fn(module, take(train_x, idx, augment, aug_gen))
            guard.add(loss.detach(), len(idx), step, opt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
            if step % LOG_EVERY == 0:
                bar.set_postfix(loss=f"{guard.read() / seen / nats_per_unit:.4f}")
    finally:
        opt.found_inf = None
    if seen == 0:
        raise RepbenchError(f"no training batch of two or more images: {len(images)} training images, "
                            f"batch size {cfg.batch_size}")
    return guard.read() / seen / nats_per_unit


class NanGuard:
    """The epoch's loss sum and the first non-finite loss, kept on the device. From a non-finite loss on, the
    fused optimizer skips every step (its found_inf flag, as under a gradient scaler); the host reads the flag
    with the sum every LOG_EVERY steps and at the epoch's end, and stops the run there, before any checkpoint
    is written: no step after a non-finite loss is applied and the last good checkpoint stays."""

    def __init__(self, device: torch.device, epoch: int, checkpoint: Path | None):
        self.epoch, self.checkpoint = epoch, checkpoint
        self.total = torch.zeros((), dtype=torch.float64, device=device)   # sum of loss x images, nats
        self.first_bad = torch.full((), -1.0, dtype=torch.float64, device=device)  # its step; -1: none yet
        self.bad_value = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, loss: torch.Tensor, images: int, step: int, opt: torch.optim.Optimizer) -> None:
        loss = loss.double()
        new = ~torch.isfinite(loss) & (self.first_bad < 0)
        self.first_bad = torch.where(new, float(step), self.first_bad)
        self.bad_value = torch.where(new, loss, self.bad_value)
        self.total += loss * images
        if opt.defaults.get("fused"):
            opt.found_inf = (self.first_bad >= 0).float()
        else:  # an optimizer without found_inf: the host checks every step
            self.read()

    def read(self) -> float:
        """The loss sum so far (one transfer); NonFiniteLoss if a loss was not finite."""
        total, first_bad, bad_value = torch.stack([self.total, self.first_bad, self.bad_value]).tolist()
        if first_bad >= 0:
            raise NonFiniteLoss(_nan_message(bad_value, self.epoch, int(first_bad), self.checkpoint,
                                             start_epoch=self.epoch - 1))
        return total


def images_of(data) -> torch.Tensor:
    return data[0] if isinstance(data, tuple) else data


def take(data, idx: torch.Tensor, augment: Augment | None, generator: torch.Generator):
    """The batch `idx` of the training data, its images augmented; the same structure as `data`."""
    images = images_of(data)[idx]
    images = images if augment is None else augment(images, generator)
    return (images,) + tuple(t[idx] for t in data[1:]) if isinstance(data, tuple) else images


def save_state(checkpoint: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig, epoch: int,
               history: list[dict], meta: dict | None, device: torch.device) -> None:
    save_checkpoint(checkpoint, {
        **(meta or {}), "model": module.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
        "history": history, "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "train_config": asdict(cfg), "finished": epoch == cfg.epochs})


def _nan_message(loss, epoch, step, checkpoint, start_epoch) -> str:
    kept = (f"the last good checkpoint (epoch {start_epoch}) is kept at {checkpoint}"
            if checkpoint is not None and checkpoint.exists() else "no checkpoint had been written yet")
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    return f"training stopped: non-finite loss ({value}) at epoch {epoch}, step {step}; {kept}"
