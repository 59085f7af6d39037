"""``lens train``: fine-tune ResNet-18 on a dataset source and record everything about it.

The recipe (the reference analysis' baseline, and the defaults here):

* torchvision ResNet-18, unmodified, ImageNet weights when ``pretrained`` (or a local
  state dict given as ``weights``), with a new ``num_classes`` head;
* inputs 32x32 (``image_size``; other sizes are resized once, bilinearly, at decode time),
  scaled to [0, 1] and standardised per channel with the *training subset's* mean/std
  (:func:`lens.models.channel_stats`, stored in the checkpoint and in ``runs.config``);
* AdamW (weight decay 0.01) with two parameter groups: the head at ``head_lr`` (1e-3) and
  the backbone at ``backbone_lr`` (1e-4, a fine-tuning rate). **Without pretrained weights**
  (``pretrained=False`` and no ``weights``) the backbone rate defaults to the head's, because
  1e-4 is far too slow from scratch (57% vs 72% CIFAR-10 test accuracy after 3 epochs);
* a cosine schedule from the initial rates to 0 over all steps of all epochs (stepped
  per batch), batch 128, 3 epochs, no augmentation;
* seeded: ``torch.manual_seed(seed)`` before the head is built, a ``torch.Generator``
  seeded with ``seed`` for the per-epoch shuffles, ``seed`` for the stratified subsets.
  The same seed gives identical predictions on CPU.

Images are decoded once (:meth:`lens.datasets.DatasetSource.load`) into a uint8 tensor
(N, 3, H, W) that lives on the training device; batches are gathered from it and
converted to float there, so there is no PIL and no DataLoader in the loop. A final
batch of a single example is dropped from that epoch (BatchNorm cannot train on one).

What one run writes, in ONE transaction at the end (a crash before it writes nothing;
rerunning redoes the run):

=================  ==================================================================
``runs``           kind 'train', model 'resnet18', ``dataset`` (absolute path of a local source),
                   ``checkpoint_path``, ``config`` (JSON:
                   every option, the effective learning rates, mean/std, subset sizes)
``classes``        the dataset's class names
``predictions``    every evaluation example: probabilities, top-3, loss, image URI
``failures``       every misclassification, with its (decoded, resized) image as PNG
``training_log``   per epoch: one row for all classes (class_id -1) and one per class;
                   train loss/accuracy, eval loss/accuracy, sizes, head lr, seconds
``features``       512-d penultimate features (global-average-pooled layer4, eval mode)
                   of every evaluation (split 'eval') and training (split 'train')
                   example, ``example_id`` = the example's index in its dataset split
``stage_runs``     stage 'train'
=================  ==================================================================

The checkpoint (:func:`lens.models.save_checkpoint`) is written just before that
transaction to a new file ``<warehouse dir>/artifacts/<run>/model-<UTC time>-<random>.pt``
(``runs.checkpoint_path`` names it relative to the warehouse's folder, read back with
:meth:`Warehouse.artifact_path`), never over the stored run's checkpoint: a retrain
killed before its commit leaves the old run and its weights as they were. After the
commit the run's other checkpoint files are removed.

Rerunning a run that exists and is complete does nothing (the result says so, and
which options differ, if any); ``force=True`` replaces it, deleting the run's rows in
the tables above and in ``samples``, ``evidence`` and ``stage_runs`` (they were made
from the old model); hypotheses, embeddings, clusters and verdicts are kept.

Augmentation hook: :func:`run` and :func:`train_epoch` take ``transform``, a callable
``transform(images, labels) -> images`` applied to every training batch, where
``images`` is a uint8 tensor (B, 3, H, W) on the training device and ``labels`` an int64
tensor (B,); it returns uint8 (0..255) or float (0..1) images of the same shape, before
normalisation. It should draw randomness from torch's global generator (seeded).

Corrected labels (``labels_from``, ``lens train --labels-from RUN``): after decoding, the
labels of examples an annotator corrected (``label_corrections``, see :mod:`lens.corrections`)
replace the dataset's, in the training split (what the model learns) and in the evaluation
split (what its predictions, failures and metrics are scored against); the subsets are drawn
by the dataset's labels first, so a corrected run sees the same examples. ``config.labels_from``
lists every label changed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lens.datasets import DatasetSource, Split, open_source
from lens.errors import DataError, LensError
from lens.models import (
    ARCH,
    build_resnet18,
    channel_stats,
    penultimate,
    resolve_device,
    save_checkpoint,
)
from lens.predictions import _list_column, failure_table, prediction_table, store_results, write_run
from lens.warehouse import Warehouse, delete_rows, record_stage, replace_rows, utcnow

DEFAULT_EPOCHS = 3
DEFAULT_BATCH_SIZE = 128
DEFAULT_HEAD_LR = 1e-3
DEFAULT_BACKBONE_LR = 1e-4  # fine-tuning rate, used only with pretrained weights
WEIGHT_DECAY = 0.01
DEFAULT_IMAGE_SIZE = 32
EVAL_BATCH_SIZE = 512
TRAIN_SPLIT = "train"
EVAL_SPLITS = ("test", "val", "validation", "valid")
#: tables whose rows for a run are deleted when it is retrained with force=True
REPLACED_TABLES = ("prediction_rows", "failures", "training_log", "features", "samples", "evidence", "stage_runs")
#: options compared when a rerun finds the run already there
COMPARED_OPTIONS = (
    "data", "epochs", "batch_size", "limit_train", "limit_test", "seed", "pretrained", "weights",
    "head_lr", "backbone_lr", "image_size", "labels_from",
)

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


@dataclass
class TrainResult:
    run_id: str
    skipped: bool = False
    message: str = ""
    n_train: int = 0
    n_eval: int = 0
    accuracy: float | None = None
    failures: int = 0
    device: str = ""
    checkpoint: str | None = None
    seconds: float = 0.0
    epochs: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


# -- the loop (also used by benchmarks/bench_train.py) --------------------------------------


def to_device_images(images: np.ndarray, device: str):
    """uint8 (N, H, W, 3) array -> uint8 tensor (N, 3, H, W) on ``device`` (contiguous)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    return t.to(device)


def _stats_tensors(mean, std, device: str):
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
    """Row-wise softmax in float64 (rows sum to 1 to within float rounding)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


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


# -- the stage ------------------------------------------------------------------------------


def default_run_id(source: DatasetSource) -> str:
    """The run name when none is given: the dataset's name (``cifar10`` for ../shared/data/cifar10)."""
    name = Path(source.spec.rstrip("/")).name or source.spec
    return name


def effective_lrs(*, pretrained: bool, weights: str | None, head_lr: float | None,
                  backbone_lr: float | None) -> tuple[float, float, str]:
    """(head_lr, backbone_lr, why) with the defaults of the recipe filled in."""
    head = DEFAULT_HEAD_LR if head_lr is None else float(head_lr)
    if backbone_lr is not None:
        return head, float(backbone_lr), "given"
    if pretrained or weights:
        return head, DEFAULT_BACKBONE_LR, "fine-tuning default for pretrained weights"
    return head, head, "no pretrained weights: backbone uses the head's rate"


def _existing(warehouse: Warehouse, run_id: str) -> tuple[str | None, bool, dict[str, Any]]:
    """(kind, train stage done, config) of an existing run, or (None, False, {})."""
    with warehouse.connect() as con:
        row = con.execute("select kind, config from runs where run_id = ?", [run_id]).fetchone()
        if row is None:
            return None, False, {}
        done = con.execute(
            "select count(*) from stage_runs where run_id = ? and stage = 'train' and status = 'done'", [run_id]
        ).fetchone()[0]
    try:
        config = json.loads(row[1] or "{}")
    except ValueError:
        config = {}
    return row[0], bool(done), config


def _eval_split(source: DatasetSource) -> str:
    for name in EVAL_SPLITS:
        if name in source.splits():
            return name
    raise DataError(
        f"{source.spec}: no evaluation split (looked for {', '.join(EVAL_SPLITS)}; found "
        f"{', '.join(source.splits()) or 'none'})"
    )


def _log_rows(run_id: str, epoch: int, tr: EpochStats, ev: dict[str, np.ndarray], lr: float,
              seconds: float) -> list[dict[str, Any]]:
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


def _log_table(rows: list[dict[str, Any]]) -> pa.Table:
    schema = pa.schema([
        ("run_id", pa.string()), ("epoch", pa.int32()), ("class_id", pa.int32()),
        ("train_loss", pa.float64()), ("train_accuracy", pa.float64()),
        ("eval_loss", pa.float64()), ("eval_accuracy", pa.float64()),
        ("n_train", pa.int64()), ("n_eval", pa.int64()), ("lr", pa.float64()), ("seconds", pa.float64()),
    ])
    return pa.Table.from_pylist(rows, schema=schema)


def feature_table(run_id: str, split: str, example_ids: np.ndarray, labels: np.ndarray,
                  vectors: np.ndarray) -> pa.Table:
    """``features`` rows: one FLOAT[] vector per example (built as Arrow, no Python loop)."""
    n = len(example_ids)
    return pa.table({
        "run_id": pa.repeat(pa.scalar(run_id, pa.string()), n),
        "split": pa.array(np.full(n, split, dtype=object), type=pa.string()),
        "example_id": pa.array(np.asarray(example_ids, dtype=np.int64)),
        "label": pa.array(np.asarray(labels, dtype=np.int32)),
        "vector": _list_column(np.asarray(vectors, dtype=np.float32), pa.float32()),
    })


def _augmentation(warehouse: Warehouse, from_run: str, top: int, image_size: int, say):
    """(transform, info) from the top recommended fix clusters of ``from_run`` (lens.augment)."""
    from lens import augment

    with warehouse.connect(read_only=True) as con:
        exists = con.execute("select count(*) from runs where run_id = ?", [from_run]).fetchone()[0]
        if not exists:
            raise LensError(f"--augment-from: no run named {from_run!r}")
        fixes = augment.recommended_fixes(con, from_run, top=top)
    if not fixes:
        raise LensError(
            f"--augment-from {from_run!r}: the run has no fix clusters yet; run `lens run` (or hypothesize, "
            f"embed and cluster) on it first"
        )
    specs, skipped = augment.plan(fixes, top=top)
    for why in skipped:
        say(f"augment: skipped {why}")
    if not specs:
        raise LensError(f"--augment-from {from_run!r}: none of its top {top} fix clusters maps to an augmentation "
                        f"({'; '.join(skipped)})")
    for spec in specs:
        say(f"augment: {spec.kind} {spec.params} because {spec.reason}")
    info = {"from_run": from_run, "augmentations": [s.to_dict() for s in specs], "skipped": skipped}
    return augment.build(specs, image_size), info


def _label_corrections(warehouse: Warehouse, labels_from: str, dataset_ref: str):
    """The corrections that count for ``--labels-from`` (checked before anything is decoded)."""
    from lens import corrections

    with warehouse.connect(read_only=True) as con:
        row = con.execute("select dataset from runs where run_id = ?", [labels_from]).fetchone()
        if row is None:
            raise LensError(f"--labels-from: no run named {labels_from!r}")
        if row[0] != dataset_ref:
            raise LensError(f"--labels-from {labels_from!r}: its corrections are for the dataset {row[0]!r}, "
                            f"not {dataset_ref!r}; train on the same --data")
        chain = corrections.label_chain(con, labels_from)
        fixes = corrections.latest(con, chain)
    if not fixes:
        raise LensError(f"--labels-from {labels_from!r}: no label corrections imported for it (or the runs it took "
                        f"labels from); export candidates with `lens export relabel --run {labels_from} --out DIR` "
                        f"and bring the annotators' labels back with `lens labels import FILE`")
    return chain, fixes


def _apply_corrections(label_fixes, labels_from: str, train: Split, test: Split, eval_split: str,
                       num_classes: int, say) -> dict[str, Any]:
    """Replace the decoded splits' labels by the corrections; what changed, for ``runs.config``."""
    from lens import corrections

    chain, fixes = label_fixes
    bad = sorted({c.new_label for c in fixes.values() if not 0 <= c.new_label < num_classes})
    if bad:
        raise LensError(f"--labels-from {labels_from!r}: corrections name class ids {bad} the dataset does not have")
    train.labels, train_changed = corrections.apply(train.indices, train.labels, TRAIN_SPLIT, fixes)
    test.labels, eval_changed = corrections.apply(test.indices, test.labels, eval_split, fixes)
    in_splits = sum(1 for (split, _) in fixes if split in (TRAIN_SPLIT, eval_split))
    say(f"labels from {labels_from!r}: {len(train_changed)} {TRAIN_SPLIT} and {len(eval_changed)} {eval_split} labels "
        f"corrected ({len(fixes)} corrections; {len(fixes) - len(train_changed) - len(eval_changed)} keep the "
        f"given label or are outside the loaded subsets)")
    return {"run": labels_from, "runs": chain, "corrections": len(fixes), "in_splits": in_splits,
            "train": train_changed, "eval": eval_changed, "eval_split": eval_split}


def run(
    warehouse: Warehouse,
    *,
    data: str | None = None,
    run_id: str | None = None,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    limit_train: int | None = None,
    limit_test: int | None = None,
    device: str = "auto",
    seed: int = 0,
    pretrained: bool = True,
    weights: str | None = None,
    head_lr: float | None = None,
    backbone_lr: float | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    force: bool = False,
    transform: BatchTransform | None = None,
    transform_info: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
    augment_from: str | None = None,
    augment_top: int = 3,
    labels_from: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train, evaluate and store a run (see the module docstring).

    ``transform_info`` is stored in ``runs.config`` under ``augment`` (what ``transform``
    does and why); ``parent_run_id`` in ``runs.parent_run_id``. ``echo`` receives one-line
    progress messages.

    ``labels_from``: a run whose label corrections (``lens labels import``, and those of the
    runs it took labels from) replace the dataset's labels: corrections of the 'train' split
    change what the model learns from, those of the evaluation split change what its
    predictions are scored against. Both runs must use the same dataset; what changed is
    stored in ``runs.config.labels_from`` (and shown by ``lens compare``).
    """
    say = echo or (lambda _msg: None)
    started = utcnow()
    t_start = time.perf_counter()
    if epochs < 1:
        raise LensError(f"--epochs must be at least 1, got {epochs}")
    if batch_size < 2:
        raise LensError(f"--batch-size must be at least 2 (BatchNorm), got {batch_size}")
    for name, val in (("--limit-train", limit_train), ("--limit-test", limit_test)):
        if val is not None and val < 1:
            raise LensError(f"{name} must be positive, got {val}")

    if augment_from is not None:
        transform, transform_info = _augmentation(warehouse, augment_from, augment_top, image_size, say)
        parent_run_id = parent_run_id or augment_from

    source = open_source(data)
    run_id = run_id or default_run_id(source)
    if augment_from is not None and run_id == augment_from:
        raise LensError(f"--augment-from {augment_from!r} needs a new --run name for the augmented run")
    h_lr, b_lr, lr_why = effective_lrs(pretrained=pretrained, weights=weights, head_lr=head_lr,
                                       backbone_lr=backbone_lr)
    # an absolute path, so later stages (evidence) can reopen the dataset from anywhere
    dataset_ref = str(Path(source.spec).resolve()) if Path(source.spec).exists() else source.spec
    options = {
        "data": dataset_ref, "epochs": epochs, "batch_size": batch_size, "limit_train": limit_train,
        "limit_test": limit_test, "seed": seed, "pretrained": bool(pretrained and not weights),
        "weights": str(weights) if weights else None, "head_lr": h_lr, "backbone_lr": b_lr,
        "image_size": image_size, "labels_from": labels_from,
    }
    label_fixes = _label_corrections(warehouse, labels_from, dataset_ref) if labels_from else None
    parent_run_id = parent_run_id or labels_from

    kind, done, old_config = _existing(warehouse, run_id)
    if kind is not None and not force:
        if kind == "train" and done:
            differ = [k for k in COMPARED_OPTIONS if k in old_config and old_config.get(k) != options.get(k)]
            note = ""
            if differ:
                note = " Its options differ from these: " + ", ".join(
                    f"{k} {old_config.get(k)!r} (now {options.get(k)!r})" for k in differ
                ) + "."
            msg = (f"Run {run_id!r} already exists and is complete; nothing to do.{note} "
                   f"Pass --force to retrain it, or --run NAME for a new run.")
            return TrainResult(run_id, skipped=True, message=msg, config=old_config)
        raise LensError(f"Run {run_id!r} already exists ({kind}); pick another --run name or pass --force to replace it")

    dev = resolve_device(device)

    eval_split = _eval_split(source)
    class_names = list(source.class_names)
    num_classes = len(class_names)

    import torch

    # The model first: asking for pretrained weights offline fails in seconds, not after decoding.
    torch.manual_seed(seed)
    model = build_resnet18(num_classes, pretrained=pretrained and not weights, weights=weights)

    # Validate and decode all data before any training (a bad dataset errors here).
    t0 = time.perf_counter()
    train = source.load(TRAIN_SPLIT, limit=limit_train, seed=seed, size=image_size)
    test = source.load(eval_split, limit=limit_test, seed=seed, size=image_size)
    if num_classes < 2:
        raise DataError(f"{source.spec}: need at least 2 classes, found {class_names}")
    if len(train) < 2:
        raise DataError(f"{source.spec} [{TRAIN_SPLIT}]: need at least 2 training images, found {len(train)}")
    say(f"Loaded {len(train):,} {TRAIN_SPLIT} / {len(test):,} {eval_split} images "
        f"({train.images.shape[1]}x{train.images.shape[2]}) from {source.spec} in {time.perf_counter() - t0:.1f}s")
    labels_info = None
    if label_fixes is not None:
        labels_info = _apply_corrections(label_fixes, labels_from, train, test, eval_split, num_classes, say)

    model.to(dev)

    mean, std = channel_stats(train.images)
    mean_t, std_t = _stats_tensors(mean, std, dev)
    x_train = to_device_images(train.images, dev)
    y_train = torch.from_numpy(train.labels.astype(np.int64)).to(dev)
    x_eval = to_device_images(test.images, dev)
    y_eval = test.labels.astype(np.int64)

    n_steps = steps_per_epoch(len(train), batch_size)
    optimizer, scheduler = build_optimizer(model, head_lr=h_lr, backbone_lr=b_lr, total_steps=n_steps * epochs)
    generator = torch.Generator().manual_seed(seed)
    say(f"Training ResNet-18 on {dev} for {epochs} epoch(s), batch {batch_size}: "
        f"lr {h_lr:g} head / {b_lr:g} backbone ({lr_why})")

    log_rows: list[dict[str, Any]] = []
    epoch_summaries = []
    ev_out: EvalOutput | None = None
    for epoch in range(1, epochs + 1):
        tr = train_epoch(
            model, optimizer, scheduler, x_train, y_train, batch_size=batch_size, generator=generator,
            mean_t=mean_t, std_t=std_t, num_classes=num_classes, transform=transform,
            desc=f"epoch {epoch}/{epochs}", progress=progress,
        )
        ev_out = evaluate(model, x_eval, mean_t=mean_t, std_t=std_t, features=(epoch == epochs),
                          desc=f"eval {epoch}/{epochs}", progress=progress)
        ev = per_class_eval(ev_out.logits, y_eval, num_classes)
        lr = float(optimizer.param_groups[0]["lr"])
        rows = _log_rows(run_id, epoch, tr, ev, lr, tr.seconds + ev_out.seconds)
        log_rows.extend(rows)
        summary = {k: rows[0][k] for k in ("train_loss", "train_accuracy", "eval_loss", "eval_accuracy", "seconds")}
        summary["epoch"] = epoch
        epoch_summaries.append(summary)
        say(f"epoch {epoch}/{epochs}: train loss {summary['train_loss']:.4f} acc {summary['train_accuracy']:.3f}"
            f" | eval loss {summary['eval_loss']:.4f} acc {summary['eval_accuracy']:.3f}"
            f" | {len(train) / tr.seconds:,.0f} img/s, {summary['seconds']:.1f}s")

    assert ev_out is not None and ev_out.features is not None
    train_feats = evaluate(model, x_train, mean_t=mean_t, std_t=std_t, features=True,
                           desc="train features", progress=progress).features

    probs = softmax(ev_out.logits)
    preds = prediction_table(run_id, test.indices, test.labels, probs=probs, image_uris=test.uris)
    failures = failure_table(run_id, preds, lambda pos: test.images[pos])
    features = pa.concat_tables([
        feature_table(run_id, "eval", test.indices, test.labels, ev_out.features),
        feature_table(run_id, "train", train.indices, train.labels, train_feats),
    ])
    log = _log_table(log_rows)

    config = {
        **options,
        "device": device, "device_used": dev, "eval_split": eval_split, "train_split": TRAIN_SPLIT,
        "backbone_lr_reason": lr_why, "optimizer": "AdamW", "weight_decay": WEIGHT_DECAY,
        "schedule": "cosine per step to 0", "mean": mean, "std": std, "n_train": len(train),
        "n_eval": len(test), "arch": ARCH, "augment": transform_info if transform is not None else None,
        "labels_from": labels_info,
    }
    # A new file, never the stored run's: a retrain killed before its commit must leave the old
    # run's weights as they were (tests/test_crash_safety.py).
    art = warehouse.artifact_dir(run_id)
    ckpt = art / f"model-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}.pt"
    save_checkpoint(ckpt, model, class_names=class_names, mean=mean, std=std, image_size=train.images.shape[1])

    accuracy = float((preds.column("pred").to_numpy() == test.labels).mean())
    try:
        referenced = _store(
            warehouse, run_id, force=force, class_names=class_names, dataset_ref=dataset_ref,
            eval_split=eval_split, ckpt=ckpt, parent_run_id=parent_run_id, config=config, preds=preds,
            failures=failures, log=log, features=features, started=started, details={
                "n_train": len(train), "n_eval": len(test), "epochs": epochs, "accuracy": accuracy,
                "failures": failures.num_rows, "device": dev})
    except BaseException:
        ckpt.unlink(missing_ok=True)
        raise
    for old in art.iterdir():  # the replaced run's checkpoint, leftovers of killed trainings
        if old.name.startswith("model") and str(old.resolve()) not in referenced:
            old.unlink(missing_ok=True)
    return TrainResult(
        run_id, n_train=len(train), n_eval=len(test), accuracy=accuracy, failures=failures.num_rows, device=dev,
        checkpoint=str(ckpt), seconds=time.perf_counter() - t_start, epochs=epoch_summaries, config=config,
    )


def _store(warehouse: Warehouse, run_id: str, *, force: bool, class_names, dataset_ref, eval_split, ckpt,
           parent_run_id, config, preds, failures, log, features, started, details) -> set[str]:
    """Write the run's rows in one transaction (module docstring); return every run's checkpoint path."""
    with warehouse.transaction() as con:
        exists = con.execute("select kind from runs where run_id = ?", [run_id]).fetchone()
        if exists and not force:
            raise LensError(f"Run {run_id!r} was created by another command meanwhile; pass --force to replace it")
        for table in REPLACED_TABLES:
            delete_rows(con, table, {"run_id": run_id})
        write_run(con, run_id, kind="train", class_names=class_names, dataset=dataset_ref, eval_split=eval_split,
                  model=ARCH, checkpoint_path=warehouse.artifact_ref(ckpt), parent_run_id=parent_run_id, config=config)
        store_results(con, run_id, preds, failures)
        replace_rows(con, "training_log", {"run_id": run_id}, log)
        replace_rows(con, "features", {"run_id": run_id}, features)
        record_stage(con, run_id, "train", started_at=started, details=details)
        rows = con.execute("select checkpoint_path from runs where checkpoint_path is not null").fetchall()
    return {str(warehouse.artifact_path(r[0]).resolve()) for r in rows}


__all__ = [
    "EpochStats", "EvalOutput", "TrainResult", "build_optimizer", "evaluate", "feature_table", "prepare_batch",
    "run", "softmax", "to_device_images", "train_epoch",
]
