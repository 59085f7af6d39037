"""``lens train``: fine-tune ResNet-18 on a dataset source and record everything about it.

The recipe (the reference analysis' baseline, and the defaults here):

* torchvision ResNet-18, unmodified, ImageNet weights when ``pretrained`` (or a local
  state dict given as ``weights``), with a new ``num_classes`` head;
* inputs 32x32 (``image_size``; other sizes are resized once, bilinearly, at decode time),
  standardised with the *training subset's* mean/std (:func:`lens.models.channel_stats`,
  stored in the checkpoint and in ``runs.config``);
* the loop of :mod:`lens.training` (AdamW, cosine schedule per step), the head at ``head_lr``
  (1e-3) and the backbone at ``backbone_lr`` (1e-4, a fine-tuning rate). **Without pretrained
  weights** (``pretrained=False`` and no ``weights``) the backbone rate defaults to the head's,
  because 1e-4 is far too slow from scratch (57% vs 72% CIFAR-10 test accuracy after 3 epochs);
* batch 128, 3 epochs, no augmentation;
* seeded: ``torch.manual_seed(seed)`` before the head is built, a ``torch.Generator``
  seeded with ``seed`` for the per-epoch shuffles, ``seed`` for the stratified subsets.
  The same seed gives identical predictions on CPU.

Images are decoded once (:meth:`lens.datasets.DatasetSource.load`); the loop itself (uint8
batches converted on the device, AdamW, the cosine schedule, per-class statistics) is
:mod:`lens.training`. This module decides what to train, runs it and stores what it made.

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

Augmentation hook: :func:`run` takes ``transform``, a callable ``transform(images, labels) ->
images`` applied to every training batch (see :mod:`lens.training`). It should draw randomness
from torch's global generator (seeded).

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
from typing import TYPE_CHECKING, Any

from lens.errors import DataError, LensError
from lens.warehouse import Warehouse, delete_rows, record_stage, replace_rows, utcnow

if TYPE_CHECKING:
    import pyarrow as pa

    from lens.datasets import DatasetSource, Split
    from lens.training import BatchTransform, Fitted

# numpy, pyarrow and torch are imported where used: the CLI shows the defaults below in its help

# the defaults of `lens train`, `lens run` (RunConfig) and their help
DEFAULT_EPOCHS = 3
DEFAULT_BATCH_SIZE = 128
DEFAULT_IMAGE_SIZE = 32
DEFAULT_SEED = 0
DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_DEVICE = "auto"
DEFAULT_AUGMENT_TOP = 3
DEFAULT_HEAD_LR = 1e-3
DEFAULT_BACKBONE_LR = 1e-4  # fine-tuning rate, used only with pretrained weights
TRAIN_SPLIT = "train"
EVAL_SPLITS = ("test", "val", "validation", "valid")
#: tables whose rows for a run are deleted when it is retrained with force=True
REPLACED_TABLES = ("prediction_rows", "failures", "training_log", "features", "samples", "evidence", "stage_runs")
#: options compared when a rerun finds the run already there
COMPARED_OPTIONS = (
    "data", "epochs", "batch_size", "limit_train", "limit_test", "seed", "pretrained", "weights",
    "head_lr", "backbone_lr", "image_size", "labels_from",
)


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
        done = con.execute("select count(*) from stage_runs where run_id = ? and stage = 'train' and status = 'done'",
                           [run_id]).fetchone()[0]
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


def _check_sizes(epochs: int, batch_size: int, limit_train: int | None, limit_test: int | None) -> None:
    if epochs < 1:
        raise LensError(f"--epochs must be at least 1, got {epochs}")
    if batch_size < 2:
        raise LensError(f"--batch-size must be at least 2 (BatchNorm), got {batch_size}")
    for name, val in (("--limit-train", limit_train), ("--limit-test", limit_test)):
        if val is not None and val < 1:
            raise LensError(f"{name} must be positive, got {val}")


def _already_there(warehouse: Warehouse, run_id: str, options: dict[str, Any], force: bool) -> TrainResult | None:
    """The result saying a complete run of that name is left alone (None: train it)."""
    kind, done, old_config = _existing(warehouse, run_id)
    if kind is None or force:
        return None
    if kind != "train" or not done:
        raise LensError(f"Run {run_id!r} already exists ({kind}); pick another --run name or pass --force to replace it")
    differ = [k for k in COMPARED_OPTIONS if k in old_config and old_config.get(k) != options.get(k)]
    note = ""
    if differ:
        note = " Its options differ from these: " + ", ".join(
            f"{k} {old_config.get(k)!r} (now {options.get(k)!r})" for k in differ
        ) + "."
    msg = (f"Run {run_id!r} already exists and is complete; nothing to do.{note} "
           f"Pass --force to retrain it, or --run NAME for a new run.")
    return TrainResult(run_id, skipped=True, message=msg, config=old_config)


def _new_model(num_classes: int, *, seed: int, pretrained: bool, weights: str | None):
    """ResNet-18 with a new head, seeded (``torch.manual_seed(seed)`` first)."""
    import torch

    from lens.models import build_resnet18

    torch.manual_seed(seed)
    return build_resnet18(num_classes, pretrained=pretrained, weights=weights)


def _decode(source: DatasetSource, eval_split: str, *, limit_train, limit_test, seed: int, image_size: int,
            say) -> tuple[Split, Split]:
    """Validate and decode both splits before any training (a bad dataset errors here)."""
    t0 = time.perf_counter()
    train = source.load(TRAIN_SPLIT, limit=limit_train, seed=seed, size=image_size)
    test = source.load(eval_split, limit=limit_test, seed=seed, size=image_size)
    if len(source.class_names) < 2:
        raise DataError(f"{source.spec}: need at least 2 classes, found {list(source.class_names)}")
    if len(train) < 2:
        raise DataError(f"{source.spec} [{TRAIN_SPLIT}]: need at least 2 training images, found {len(train)}")
    say(f"Loaded {len(train):,} {TRAIN_SPLIT} / {len(test):,} {eval_split} images "
        f"({train.images.shape[1]}x{train.images.shape[2]}) from {source.spec} in {time.perf_counter() - t0:.1f}s")
    return train, test


def _train_model(model, train: Split, test: Split, dev: str, *, run_id: str, options: dict[str, Any],
                 num_classes: int, transform, progress: bool, say) -> tuple[Fitted, Any, list[float], list[float]]:
    """Fit ``model`` with the recipe; (fitted, the training split's features, mean, std)."""
    import numpy as np
    import torch

    from lens.models import channel_stats
    from lens.training import evaluate, fit, stats_tensors, to_device_images

    model.to(dev)
    mean, std = channel_stats(train.images)
    mean_t, std_t = stats_tensors(mean, std, dev)
    x_train = to_device_images(train.images, dev)
    y_train = torch.from_numpy(train.labels.astype(np.int64)).to(dev)
    x_eval = to_device_images(test.images, dev)
    epochs = options["epochs"]
    say(f"Training ResNet-18 on {dev} for {epochs} epoch(s), batch {options['batch_size']}: "
        f"lr {options['head_lr']:g} head / {options['backbone_lr']:g} backbone ({options['backbone_lr_reason']})")

    def report(epoch: int, tr, s: dict[str, Any]) -> None:
        say(f"epoch {epoch}/{epochs}: train loss {s['train_loss']:.4f} acc {s['train_accuracy']:.3f}"
            f" | eval loss {s['eval_loss']:.4f} acc {s['eval_accuracy']:.3f}"
            f" | {len(train) / tr.seconds:,.0f} img/s, {s['seconds']:.1f}s")

    fitted = fit(model, x_train, y_train, x_eval, test.labels.astype(np.int64), run_id=run_id, epochs=epochs,
                 batch_size=options["batch_size"], head_lr=options["head_lr"], backbone_lr=options["backbone_lr"],
                 seed=options["seed"], mean_t=mean_t, std_t=std_t, num_classes=num_classes, transform=transform,
                 features=True, progress=progress, after_epoch=report)
    train_feats = evaluate(model, x_train, mean_t=mean_t, std_t=std_t, features=True,
                           desc="train features", progress=progress).features
    return fitted, train_feats, mean, std


def _tables(run_id: str, train: Split, test: Split, fitted: Fitted, train_feats) -> dict[str, pa.Table]:
    """The rows to store: predictions, failures, features and training_log."""
    import pyarrow as pa

    from lens.predictions import failure_table, feature_table, prediction_table
    from lens.training import log_table, softmax

    ev = fitted.last_eval
    assert ev is not None and ev.features is not None
    preds = prediction_table(run_id, test.indices, test.labels, probs=softmax(ev.logits), image_uris=test.uris)
    return {
        "preds": preds,
        "failures": failure_table(run_id, preds, lambda pos: test.images[pos]),
        "features": pa.concat_tables([
            feature_table(run_id, "eval", test.indices, test.labels, ev.features),
            feature_table(run_id, "train", train.indices, train.labels, train_feats),
        ]),
        "log": log_table(fitted.log_rows),
    }


def run(
    warehouse: Warehouse,
    *,
    data: str | None = None,
    run_id: str | None = None,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    limit_train: int | None = None,
    limit_test: int | None = None,
    device: str = DEFAULT_DEVICE,
    seed: int = DEFAULT_SEED,
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
    augment_top: int = DEFAULT_AUGMENT_TOP,
    labels_from: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train, evaluate and store a run (the module docstring says how, and what ``transform`` and
    ``labels_from`` do). ``transform_info`` is stored in ``runs.config`` under ``augment`` (what
    ``transform`` does and why); ``parent_run_id`` in ``runs.parent_run_id``. ``echo`` receives
    one-line progress messages; ``progress`` shows progress bars.
    """
    from lens.datasets import open_source
    from lens.models import resolve_device

    say, started, t_start = echo or (lambda _msg: None), utcnow(), time.perf_counter()
    _check_sizes(epochs, batch_size, limit_train, limit_test)
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
    }  # what a rerun compares (COMPARED_OPTIONS)
    label_fixes = _label_corrections(warehouse, labels_from, dataset_ref) if labels_from else None
    parent_run_id = parent_run_id or labels_from
    if (skipped := _already_there(warehouse, run_id, options, force)) is not None:
        return skipped

    dev = resolve_device(device)
    eval_split = _eval_split(source)
    class_names = list(source.class_names)
    # The model first: asking for pretrained weights offline fails in seconds, not after decoding.
    model = _new_model(len(class_names), seed=seed, pretrained=pretrained and not weights, weights=weights)
    train, test = _decode(source, eval_split, limit_train=limit_train, limit_test=limit_test, seed=seed,
                          image_size=image_size, say=say)
    labels_info = None if label_fixes is None else _apply_corrections(
        label_fixes, labels_from, train, test, eval_split, len(class_names), say)
    fitted, train_feats, mean, std = _train_model(
        model, train, test, dev, run_id=run_id, options={**options, "backbone_lr_reason": lr_why},
        num_classes=len(class_names), transform=transform, progress=progress, say=say)
    config = _config(options, device=device, dev=dev, eval_split=eval_split, lr_why=lr_why, mean=mean, std=std,
                     n_train=len(train), n_eval=len(test), augment=transform_info if transform is not None else None,
                     labels_info=labels_info)
    return _finish(warehouse, run_id, model, train, test, fitted, train_feats, config, force=force,
                   class_names=class_names, parent_run_id=parent_run_id, started=started, t_start=t_start)


def _config(options: dict[str, Any], *, device, dev, eval_split, lr_why, mean, std, n_train, n_eval, augment,
            labels_info) -> dict[str, Any]:
    """``runs.config``: the options, then how the run was actually trained."""
    from lens.models import ARCH
    from lens.training import WEIGHT_DECAY

    return {
        **options,
        "device": device, "device_used": dev, "eval_split": eval_split, "train_split": TRAIN_SPLIT,
        "backbone_lr_reason": lr_why, "optimizer": "AdamW", "weight_decay": WEIGHT_DECAY,
        "schedule": "cosine per step to 0", "mean": mean, "std": std, "n_train": n_train,
        "n_eval": n_eval, "arch": ARCH, "augment": augment, "labels_from": labels_info,
    }


def _finish(warehouse: Warehouse, run_id: str, model, train: Split, test: Split, fitted: Fitted, train_feats,
            config: dict[str, Any], *, force: bool, class_names: list[str], parent_run_id: str | None, started,
            t_start: float) -> TrainResult:
    """Store the trained run (checkpoint, then one transaction) and say what it scored."""
    tables = _tables(run_id, train, test, fitted, train_feats)
    accuracy = float((tables["preds"].column("pred").to_numpy() == test.labels).mean())
    dev = config["device_used"]
    ckpt = _save(warehouse, run_id, model, tables, force=force, class_names=class_names,
                 dataset_ref=config["data"], eval_split=config["eval_split"], parent_run_id=parent_run_id,
                 config=config, started=started, image_size=train.images.shape[1], details={
                     "n_train": len(train), "n_eval": len(test), "epochs": config["epochs"], "accuracy": accuracy,
                     "failures": tables["failures"].num_rows, "device": dev})
    return TrainResult(
        run_id, n_train=len(train), n_eval=len(test), accuracy=accuracy, failures=tables["failures"].num_rows,
        device=dev, checkpoint=str(ckpt), seconds=time.perf_counter() - t_start, epochs=fitted.epochs,
        config=config,
    )


def _save(warehouse: Warehouse, run_id: str, model, tables: dict[str, pa.Table], *, force: bool, class_names,
          dataset_ref, eval_split, parent_run_id, config, started, image_size: int, details) -> Path:
    """Write the checkpoint to a new file, store the run, then remove the run's other checkpoints."""
    from lens.models import save_checkpoint

    # A new file, never the stored run's: a retrain killed before its commit must leave the old
    # run's weights as they were (tests/test_crash_safety.py).
    art = warehouse.artifact_dir(run_id)
    ckpt = art / f"model-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}.pt"
    save_checkpoint(ckpt, model, class_names=class_names, mean=config["mean"], std=config["std"],
                    image_size=image_size)
    try:
        referenced = _store(
            warehouse, run_id, force=force, class_names=class_names, dataset_ref=dataset_ref,
            eval_split=eval_split, ckpt=ckpt, parent_run_id=parent_run_id, config=config, preds=tables["preds"],
            failures=tables["failures"], log=tables["log"], features=tables["features"], started=started,
            details=details)
    except BaseException:
        ckpt.unlink(missing_ok=True)
        raise
    for old in art.iterdir():  # the replaced run's checkpoint, leftovers of killed trainings
        if old.name.startswith("model") and str(old.resolve()) not in referenced:
            old.unlink(missing_ok=True)
    return ckpt


def _store(warehouse: Warehouse, run_id: str, *, force: bool, class_names, dataset_ref, eval_split, ckpt,
           parent_run_id, config, preds, failures, log, features, started, details) -> set[str]:
    """Write the run's rows in one transaction (module docstring); return every run's checkpoint path."""
    from lens.models import ARCH
    from lens.predictions import store_results, write_run

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
    "DEFAULT_BACKBONE_LR", "DEFAULT_BATCH_SIZE", "DEFAULT_EPOCHS", "DEFAULT_HEAD_LR", "DEFAULT_IMAGE_SIZE",
    "TrainResult", "default_run_id", "effective_lrs", "run",
]
