"""The training loop: ResNet-18 fine-tuning over decoded uint8 images (torch imported lazily).

Used by ``lens train`` (:mod:`lens.stages.train`, which decides what to train and stores it),
``lens experiment`` (:mod:`lens.stages.experiment`) and ``benchmarks/bench_train.py``.

* Images are a uint8 tensor (N, 3, H, W) on the training device; batches are gathered from it
  and converted to float there (:func:`prepare_batch`: scaled to [0, 1], standardised with
  the training subset's per-channel mean/std), so there is no PIL and no DataLoader in the loop.
* AdamW (weight decay 0.01) with two parameter groups, the new head and the backbone, and a
  cosine schedule to 0 stepped per batch (:func:`build_optimizer`).
* Each epoch's order is ``torch.randperm(N, generator=generator)``; a final batch of a single
  example is dropped from that epoch (BatchNorm cannot train on one).
* ``transform(images, labels) -> images`` (an augmentation, :mod:`lens.augment`) is applied to
  every training batch: ``images`` uint8 (B, 3, H, W) on the device, ``labels`` int64 (B,); it
  returns uint8 (0..255) or float (0..1) images of the same shape, before normalisation.
* :func:`fit` runs the epochs (train, then evaluate) and returns the ``training_log`` rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from lens.models import penultimate

WEIGHT_DECAY = 0.01
EVAL_BATCH_SIZE = 512

BatchTransform = Callable[[Any, Any], Any]


@dataclass
class EpochStats:
    """Per-class sums of one training epoch (arrays of shape (C,))."""

    loss_sum: np.ndarray
    correct: np.ndarray
    count: np.ndarray
    seconds: float

    @property
    def loss(self) -> float:
        return float(self.loss_sum.sum() / max(self.count.sum(), 1))

    @property
    def accuracy(self) -> float:
        return float(self.correct.sum() / max(self.count.sum(), 1))


@dataclass
class EvalOutput:
    """Logits (N, C) float32 and, when asked for, penultimate features (N, 512) float32."""

    logits: np.ndarray
    features: np.ndarray | None
    seconds: float


def to_device_images(images: np.ndarray, device: str):
    """uint8 (N, H, W, 3) array -> uint8 tensor (N, 3, H, W) on ``device`` (contiguous)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    return t.to(device)


def stats_tensors(mean, std, device: str):
    """Per-channel mean and std as float32 tensors (1, 3, 1, 1) on ``device``."""
    import torch

    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return m, s


def prepare_batch(batch, mean_t, std_t):
    """uint8 (0..255) or float (0..1) batch (B, 3, H, W) -> normalised float32, as lens.models.normalize."""
    import torch

    x = batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()
    return (x - mean_t) / std_t


def build_optimizer(model, *, head_lr: float, backbone_lr: float, total_steps: int):
    """AdamW with the head and backbone as two groups, and a per-step cosine schedule to 0."""
    import torch

    head = list(model.fc.parameters())
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    opt = torch.optim.AdamW(
        [{"params": head, "lr": head_lr}, {"params": backbone, "lr": backbone_lr}],
        weight_decay=WEIGHT_DECAY,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    return opt, sched


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps of one epoch over ``n`` examples (a last batch of one is dropped)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 else 0)


def train_epoch(
    model,
    optimizer,
    scheduler,
    images,
    labels,
    *,
    batch_size: int,
    generator,
    mean_t,
    std_t,
    num_classes: int,
    transform: BatchTransform | None = None,
    desc: str = "train",
    progress: bool = True,
) -> EpochStats:
    """One epoch over uint8 ``images`` (N, 3, H, W) and int64 ``labels`` (N,), both on the device.

    The order is ``torch.randperm(N, generator=generator)``; the loss is mean cross-entropy.
    Per-class loss sums and correct counts are accumulated on the device (no sync per step,
    except to refresh the progress bar's running loss every few steps).
    """
    import torch
    from torch.nn import functional as F
    from tqdm import tqdm

    device = images.device
    n = images.shape[0]
    order = torch.randperm(n, generator=generator)
    if n % batch_size == 1 and n > 1:
        order = order[:-1]  # BatchNorm cannot train on a batch of one
    order = order.to(device)
    loss_sum = torch.zeros(num_classes, dtype=torch.float64, device=device)
    correct = torch.zeros(num_classes, dtype=torch.float64, device=device)
    count = torch.zeros(num_classes, dtype=torch.float64, device=device)
    model.train()
    t0 = time.perf_counter()
    n_steps = (len(order) + batch_size - 1) // batch_size
    bar = tqdm(total=n_steps, desc=desc, unit="batch", leave=False, disable=None if progress else True)
    try:
        for step, start in enumerate(range(0, len(order), batch_size)):
            idx = order[start : start + batch_size]
            xb = images[idx]
            yb = labels[idx]
            if transform is not None:
                xb = transform(xb, yb)
            x = prepare_batch(xb, mean_t, std_t)
            logits = model(x)
            losses = F.cross_entropy(logits, yb, reduction="none")
            loss = losses.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                loss_sum.index_add_(0, yb, losses.detach().double())
                correct.index_add_(0, yb, (logits.argmax(1) == yb).double())
                count.index_add_(0, yb, torch.ones_like(yb, dtype=torch.float64))
            bar.update(1)
            if not bar.disable and (step % 10 == 0 or step == n_steps - 1):
                bar.set_postfix(loss=f"{(loss_sum.sum() / count.sum()).item():.4f}")
    finally:
        bar.close()
    stats = EpochStats(loss_sum.cpu().numpy(), correct.cpu().numpy(), count.cpu().numpy(), 0.0)
    stats.seconds = time.perf_counter() - t0
    return stats


def evaluate(
    model,
    images,
    *,
    mean_t,
    std_t,
    batch_size: int = EVAL_BATCH_SIZE,
    features: bool = False,
    desc: str = "eval",
    progress: bool = True,
) -> EvalOutput:
    """Logits (and penultimate features) of uint8 ``images`` (N, 3, H, W) in eval mode."""
    import torch
    from tqdm import tqdm

    model.eval()
    t0 = time.perf_counter()
    logits, feats = [], []
    n = images.shape[0]
    with torch.inference_mode():
        for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False,
                          disable=None if progress else True):
            x = prepare_batch(images[start : start + batch_size], mean_t, std_t)
            f = penultimate(model, x)
            logits.append(model.fc(f).float().cpu())
            if features:
                feats.append(f.float().cpu())
    out_logits = torch.cat(logits).numpy() if logits else np.zeros((0, model.fc.out_features), np.float32)
    out_feats = torch.cat(feats).numpy() if features and feats else None
    return EvalOutput(out_logits, out_feats, time.perf_counter() - t0)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (``scipy.special.softmax``; rows sum to 1 to within rounding)."""
    from scipy.special import softmax as _softmax

    return _softmax(np.asarray(logits, dtype=np.float64), axis=1)


def per_class_eval(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Per-class eval loss sum, correct count and count (arrays (C,)) from logits."""
    probs = softmax(logits)
    n = len(labels)
    losses = -np.log(np.maximum(probs[np.arange(n), labels], 1e-12))
    right = (probs.argmax(axis=1) == labels).astype(np.float64)
    return {
        "loss_sum": np.bincount(labels, weights=losses, minlength=num_classes),
        "correct": np.bincount(labels, weights=right, minlength=num_classes),
        "count": np.bincount(labels, minlength=num_classes).astype(np.float64),
    }


def log_rows(run_id: str, epoch: int, tr: EpochStats, ev: dict[str, np.ndarray], lr: float,
              seconds: float) -> list[dict[str, Any]]:
    """``training_log`` rows of one epoch: all classes (class_id -1), then one per class."""
    def ratio(a, b):
        return float(a / b) if b else None

    rows = [{
        "run_id": run_id, "epoch": epoch, "class_id": -1,
        "train_loss": ratio(tr.loss_sum.sum(), tr.count.sum()),
        "train_accuracy": ratio(tr.correct.sum(), tr.count.sum()),
        "eval_loss": ratio(ev["loss_sum"].sum(), ev["count"].sum()),
        "eval_accuracy": ratio(ev["correct"].sum(), ev["count"].sum()),
        "n_train": int(tr.count.sum()), "n_eval": int(ev["count"].sum()), "lr": lr, "seconds": seconds,
    }]
    for c in range(len(tr.count)):
        rows.append({
            "run_id": run_id, "epoch": epoch, "class_id": c,
            "train_loss": ratio(tr.loss_sum[c], tr.count[c]),
            "train_accuracy": ratio(tr.correct[c], tr.count[c]),
            "eval_loss": ratio(ev["loss_sum"][c], ev["count"][c]),
            "eval_accuracy": ratio(ev["correct"][c], ev["count"][c]),
            "n_train": int(tr.count[c]), "n_eval": int(ev["count"][c]), "lr": lr, "seconds": seconds,
        })
    return rows


def log_table(rows: list[dict[str, Any]]) -> pa.Table:
    """``training_log`` rows as Arrow, with the table's column types."""
    schema = pa.schema([
        ("run_id", pa.string()), ("epoch", pa.int32()), ("class_id", pa.int32()),
        ("train_loss", pa.float64()), ("train_accuracy", pa.float64()),
        ("eval_loss", pa.float64()), ("eval_accuracy", pa.float64()),
        ("n_train", pa.int64()), ("n_eval", pa.int64()), ("lr", pa.float64()), ("seconds", pa.float64()),
    ])
    return pa.Table.from_pylist(rows, schema=schema)


@dataclass
class Fitted:
    """What :func:`fit` gives back: the ``training_log`` rows of every epoch, one summary per
    epoch (the all-classes row's losses and accuracies, with ``epoch`` and ``seconds``), and
    the last epoch's evaluation (with features when asked for)."""

    log_rows: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    last_eval: EvalOutput | None = None
    seconds: float = 0.0


def fit(model, x_train, y_train, x_eval, y_eval: np.ndarray, *, run_id: str, epochs: int, batch_size: int,
        head_lr: float, backbone_lr: float, seed: int, mean_t, std_t, num_classes: int,
        transform: BatchTransform | None = None, features: bool = False, label: str = "", progress: bool = True,
        before_epoch: Callable[[Any], None] | None = None,
        after_epoch: Callable[[int, EpochStats, dict[str, Any]], None] | None = None) -> Fitted:
    """Train ``model`` (already on the device) for ``epochs`` on uint8 ``x_train`` (N, 3, H, W) and
    int64 ``y_train`` (N,) tensors, evaluating on ``x_eval`` (M, 3, H, W) after each epoch
    (``y_eval``: int (M,) array). The shuffles come from ``torch.Generator().manual_seed(seed)``.

    ``features``: the last evaluation also keeps the 512-d penultimate features.
    ``before_epoch(generator)`` is called before each epoch draws its order;
    ``after_epoch(epoch, train_stats, summary)`` after it is evaluated. ``label`` prefixes the
    progress bars' names.
    """
    import torch

    t0 = time.perf_counter()
    optimizer, scheduler = build_optimizer(model, head_lr=head_lr, backbone_lr=backbone_lr,
                                           total_steps=steps_per_epoch(x_train.shape[0], batch_size) * epochs)
    generator = torch.Generator().manual_seed(seed)
    out = Fitted()
    for epoch in range(1, epochs + 1):
        if before_epoch is not None:
            before_epoch(generator)
        tr = train_epoch(model, optimizer, scheduler, x_train, y_train, batch_size=batch_size, generator=generator,
                         mean_t=mean_t, std_t=std_t, num_classes=num_classes, transform=transform,
                         desc=f"{label}epoch {epoch}/{epochs}", progress=progress)
        out.last_eval = evaluate(model, x_eval, mean_t=mean_t, std_t=std_t, features=features and epoch == epochs,
                                 desc=f"{label}eval {epoch}/{epochs}", progress=progress)
        ev = per_class_eval(out.last_eval.logits, y_eval, num_classes)
        rows = log_rows(run_id, epoch, tr, ev, float(optimizer.param_groups[0]["lr"]),
                        tr.seconds + out.last_eval.seconds)
        out.log_rows.extend(rows)
        summary = {k: rows[0][k] for k in ("train_loss", "train_accuracy", "eval_loss", "eval_accuracy", "seconds")}
        summary["epoch"] = epoch
        out.epochs.append(summary)
        if after_epoch is not None:
            after_epoch(epoch, tr, summary)
    out.seconds = time.perf_counter() - t0
    return out


__all__ = [
    "BatchTransform", "EpochStats", "EvalOutput", "Fitted", "build_optimizer", "evaluate", "fit", "log_rows",
    "log_table", "per_class_eval", "prepare_batch", "softmax", "stats_tensors", "steps_per_epoch",
    "to_device_images", "train_epoch",
]
