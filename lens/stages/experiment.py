"""``lens experiment --from RUN``: does a recommendation help? Measure it against a control.

From RUN's checkpoint, fine-tune one **arm** per top recommendation (its change: an
augmentation of :mod:`lens.augment`, or ``oversample`` for "collect more images of X") and
one **control** arm with no change. Every arm of a seed starts from the same weights, gets
the same budget (epochs x batches, optimiser, schedule, learning rates), the same data order
(one ``torch.Generator`` seeded with the seed draws the shuffles; augmentations draw from a
second one, so they never move the order) and the same evaluation split as RUN (its dataset,
subset sizes and subset seed). ``seeds`` repeats every arm with seeds 0..seeds-1, to see the
training noise. The effects are a view: ``recommendation_effects`` (arm vs control, paired,
with intervals); ``recommendations`` ranks by them.

Each arm is a run, written in ONE transaction when it finishes (runs with ``parent_run_id``
= RUN, classes, predictions, failures, training_log, stage_runs 'experiment', and its
``experiment_arms`` row), named ``<RUN>.<name>.<arm>.s<seed>``. The plan (which arms, which
clusters, why) is written to ``experiments`` before the first arm trains, so a killed
experiment resumes arm by arm with the arms it planned: finished arms are skipped, the arm
that was training starts again. ``force`` deletes the experiment's arms and plans it anew.

What an arm does not store: the 512-d ``features`` (evidence's neighbours; an arm is for
measuring) and, unless ``keep_checkpoints``, its weights.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lens import augment
from lens import defaults as D
from lens.datasets import open_source
from lens.errors import DataError, LensError
from lens.models import build_resnet18, load_checkpoint, resolve_device, save_checkpoint
from lens.predictions import failure_table, prediction_table, store_results, write_run
from lens.stages.train import DEFAULT_BATCH_SIZE, DEFAULT_HEAD_LR
from lens.training import fit, log_table, softmax, to_device_images
from lens.warehouse import Warehouse, delete_rows, insert_arrow, record_stage, require_run, utcnow

CONTROL = "control"
STAGE = "experiment"
DEFAULT_NAME = "exp"
#: options that must match to resume an experiment (seeds may grow or shrink)
COMPARED = ("epochs", "top", "batch_size", "head_lr", "backbone_lr")
#: tables holding an arm run's rows (deleted by force)
ARM_TABLES = ("prediction_rows", "failures", "training_log", "stage_runs", "classes", "experiment_arms", "runs")
#: a true class makes an ``oversample`` arm's list when it holds this share of the cluster's failures
CLASS_SHARE = 0.25
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class ArmResult:
    run_id: str
    arm: str
    seed: int
    accuracy: float | None
    seconds: float = 0.0
    resumed: bool = False  # finished by an earlier invocation, skipped now


@dataclass
class ExperimentResult:
    experiment_id: str
    parent_run_id: str
    arms: list[ArmResult] = field(default_factory=list)
    planned: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    effects: list[dict[str, Any]] = field(default_factory=list)  # recommendation_effects, scope 'overall'
    seconds: float = 0.0

    @property
    def adopt(self) -> dict[str, Any] | None:
        """The arm to adopt: the best 'beats control' overall effect, or None."""
        winners = [e for e in self.effects if e["verdict"] == "beats control"]
        return max(winners, key=lambda e: e["delta"]) if winners else None


def arm_run_id(parent: str, name: str, arm: str, seed: int) -> str:
    return f"{parent}.{name}.{arm}.s{seed}"


def checkpoint_file(warehouse: Warehouse, stored: str) -> Path:
    """The checkpoint file a ``runs.checkpoint_path`` names (:meth:`Warehouse.artifact_path`)."""
    return Path(warehouse.artifact_path(stored))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- planning ----------------------------------------------------------------------------------


def _parent(con, run_id: str) -> dict[str, Any]:
    """The parent run's row, or a one-line LensError saying what to run first."""
    run_id = require_run(con, run_id)
    kind, dataset, eval_split, ckpt, config = con.execute(
        "select kind, dataset, eval_split, checkpoint_path, config from runs where run_id = ?", [run_id]
    ).fetchone()
    if kind == "ingest" or not ckpt:
        how = "it was ingested" if kind == "ingest" else "it has no checkpoint"
        raise LensError(f"Run {run_id!r} has no model to fine-tune ({how}): train one first with "
                        f"`lens train --data DATA --run NAME`, analyse it with `lens run`, then experiment on it")
    return {"run_id": run_id, "dataset": dataset, "eval_split": eval_split, "checkpoint_path": ckpt,
            "config": json.loads(config or "{}")}


def _fix_classes(con, run_id: str) -> dict[int, list[int]]:
    """Per fix cluster: the true classes holding at least CLASS_SHARE of its failures, most first
    (never all of the run's classes)."""
    rows = con.execute(
        "select m.cluster_id, f.label, count(*) as n from cluster_members m join failures f "
        "on f.run_id = m.run_id and f.example_id = m.example_id where m.run_id = ? and m.dimension = 'fix' "
        "group by all order by m.cluster_id, n desc, f.label", [run_id]).fetchall()
    totals: dict[int, int] = {}
    for c, _, n in rows:
        totals[c] = totals.get(c, 0) + n
    n_classes = con.execute("select count(*) from classes where run_id = ?", [run_id]).fetchone()[0]
    out: dict[int, list[int]] = {}
    for c, label, n in rows:
        if not out.get(c) or n >= CLASS_SHARE * totals[c]:
            out.setdefault(c, []).append(int(label))
    # more of every class is no change at all: keep the most frequent one then
    return {c: (v[:1] if len(v) >= n_classes else v) for c, v in out.items()}


def plan(con, parent: str, *, top: int) -> tuple[list[augment.ArmPlan], list[str]]:
    """The arms for ``parent``'s top recommendations (``lens.augment.plan_arms``), or a LensError."""
    fixes = augment.recommended_fixes(con, parent, top=top)
    if not fixes:
        raise LensError(f"Run {parent!r} has no recommendations yet: run `lens run --run {parent}` (or sample, "
                        f"hypothesize, embed and cluster) first")
    classes = _fix_classes(con, parent)
    for f in fixes:
        f["classes"] = classes.get(f["cluster_id"], [])
    arms, skipped = augment.plan_arms(fixes, top=top)
    if not arms:
        raise LensError(f"None of run {parent!r}'s top {top} recommendations is a change Lens can run "
                        f"({'; '.join(skipped)}); try a larger --top")
    return arms, skipped


def _options(parent: dict[str, Any], *, epochs, top, batch_size, head_lr, backbone_lr) -> dict[str, Any]:
    cfg = parent["config"]
    return {
        "epochs": int(epochs), "top": int(top),
        "batch_size": int(batch_size or cfg.get("batch_size") or DEFAULT_BATCH_SIZE),
        "head_lr": float(head_lr if head_lr is not None else cfg.get("head_lr") or DEFAULT_HEAD_LR),
        # a parent trained from scratch used the head's rate for the backbone (lens train --no-pretrained)
        "backbone_lr": float(backbone_lr if backbone_lr is not None else cfg.get("backbone_lr") or DEFAULT_HEAD_LR),
    }


def _open_experiment(warehouse: Warehouse, parent: dict[str, Any], name: str, options: dict[str, Any], *,
                     top: int, force: bool, say) -> tuple[str, list[augment.ArmPlan], list[str]]:
    """Read the stored plan (resume) or plan and store it; ``force`` deletes the old experiment first."""
    exp_id = f"{parent['run_id']}.{name}"
    with warehouse.transaction() as con:
        row = con.execute("select config from experiments where experiment_id = ?", [exp_id]).fetchone()
        if row is not None and force:
            _delete_experiment(con, warehouse, exp_id)
            row = None
        if row is not None:
            stored = json.loads(row[0])
            differ = [k for k in COMPARED if stored["options"].get(k) != options[k]]
            if differ:
                raise LensError(
                    f"Experiment {exp_id!r} exists with other options ("
                    + ", ".join(f"{k} {stored['options'].get(k)!r}, now {options[k]!r}" for k in differ)
                    + "): pass --force to redo it, or --name NEW for another experiment")
            arms = [augment.ArmPlan(**a) for a in stored["arms"]]
            say(f"Resuming experiment {exp_id!r} with its planned arms: {', '.join(a.arm for a in arms)}")
            return exp_id, arms, stored["skipped"]
        arms, skipped = plan(con, parent["run_id"], top=top)
        config = {"options": options, "arms": [a.to_dict() for a in arms], "skipped": skipped}
        con.execute("insert into experiments values (?, ?, ?, ?, ?, ?, ?)",
                    [exp_id, parent["run_id"], name, utcnow(), options["epochs"], top,
                     json.dumps(config, default=str)])
    return exp_id, arms, skipped


def _delete_experiment(con, warehouse: Warehouse, exp_id: str) -> None:
    runs = [r[0] for r in con.execute(
        "select run_id from experiment_arms where experiment_id = ?", [exp_id]).fetchall()]
    for run_id in runs:
        ckpt = con.execute("select checkpoint_path from runs where run_id = ?", [run_id]).fetchone()
        for table in ARM_TABLES:
            delete_rows(con, table, {"run_id": run_id})
        if ckpt and ckpt[0]:
            checkpoint_file(warehouse, ckpt[0]).unlink(missing_ok=True)
    delete_rows(con, "experiments", {"experiment_id": exp_id})


# -- fine-tuning an arm (the loop itself: lens.training) -----------------------------------------


class BatchDigest:
    """A transform that records every training batch as the loop drew it, then applies ``inner``.

    The digest covers each batch's labels and per-image pixel sums, in order: two arms with
    the same digest trained on the same images in the same order (before their augmentation).
    """

    def __init__(self, inner: Callable | None = None):
        self.inner = inner
        self._h = hashlib.sha256()
        self.batches = 0

    def __call__(self, images, labels):
        import torch

        self._h.update(labels.to("cpu", torch.int64).numpy().tobytes())
        self._h.update(images.reshape(images.shape[0], -1).sum(1, dtype=torch.int64).cpu().numpy().tobytes())
        self.batches += 1
        return images if self.inner is None else self.inner(images, labels)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


@dataclass
class FineTuned:
    """What :func:`fine_tune` gives back: eval logits (N, C), per-epoch log rows, digests, the model."""

    logits: np.ndarray
    log_rows: list[dict[str, Any]]
    batches_sha256: str
    order_sha256: str
    seconds: float
    model: Any


def fine_tune(state_dict, num_classes: int, x_train, y_train, x_eval, y_eval: np.ndarray, *, run_id: str,
              epochs: int, batch_size: int, head_lr: float, backbone_lr: float, seed: int, mean_t, std_t,
              transform: Callable | None = None, progress: bool = True, say=lambda _m: None) -> FineTuned:
    """Fine-tune a ResNet-18 from ``state_dict`` on uint8 ``x_train`` (N, 3, H, W) / ``y_train`` (N,)
    (tensors on the training device) with :func:`lens.training.fit`, and evaluate it on ``x_eval``.

    ``seed`` seeds torch and the shuffle generator; ``transform`` (an augmentation, or None) is
    wrapped in a :class:`BatchDigest`. Arms that differ only in ``transform`` draw identical
    batches (same ``order_sha256`` and ``batches_sha256``).
    """
    import torch

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = build_resnet18(num_classes)
    model.load_state_dict(state_dict)
    model.to(x_train.device)
    n = x_train.shape[0]
    digest, order = BatchDigest(transform), hashlib.sha256()

    def record_order(generator) -> None:
        peek = torch.Generator()
        peek.set_state(generator.get_state())  # the permutation train_epoch is about to draw
        order.update(torch.randperm(n, generator=peek).numpy().tobytes())

    def report(epoch: int, tr, summary: dict[str, Any]) -> None:
        say(f"  {run_id} epoch {epoch}/{epochs}: train loss {summary['train_loss']:.4f}, eval acc "
            f"{summary['eval_accuracy']:.3f}, {n / tr.seconds:,.0f} img/s")

    fitted = fit(model, x_train, y_train, x_eval, y_eval, run_id=run_id, epochs=epochs, batch_size=batch_size,
                 head_lr=head_lr, backbone_lr=backbone_lr, seed=seed, mean_t=mean_t, std_t=std_t,
                 num_classes=num_classes, transform=digest, label=f"{run_id} ", progress=progress,
                 before_epoch=record_order, after_epoch=report)
    return FineTuned(fitted.last_eval.logits, fitted.log_rows, digest.hexdigest(), order.hexdigest(),
                     time.perf_counter() - t0, model)


# -- the stage -------------------------------------------------------------------------------------


@dataclass
class _Data:
    x_train: Any
    y_train: Any
    x_eval: Any
    test: Any
    labels_train: np.ndarray
    class_names: list[str]
    mean_t: Any
    std_t: Any
    state_dict: dict
    ckpt_sha256: str
    meta: dict[str, Any]


def _load(warehouse: Warehouse, parent: dict[str, Any], device: str, say) -> _Data:
    """Decode RUN's training subset and evaluation split as RUN saw them; load its checkpoint."""
    import torch

    ckpt = checkpoint_file(warehouse, parent["checkpoint_path"])
    if not ckpt.is_file():
        raise LensError(f"Run {parent['run_id']!r}: its checkpoint {ckpt} is missing (trained on another machine?): "
                        f"retrain it with `lens train --force`")
    model, meta = load_checkpoint(ckpt, device="cpu")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    del model
    cfg = parent["config"]
    source = open_source(parent["dataset"] or cfg.get("data"))
    seed, size = int(cfg.get("seed", 0)), int(meta.get("image_size") or cfg.get("image_size") or 32)
    t0 = time.perf_counter()
    train = source.load(cfg.get("train_split", "train"), limit=cfg.get("limit_train"), seed=seed, size=size)
    test = source.load(parent["eval_split"] or cfg.get("eval_split"), limit=cfg.get("limit_test"), seed=seed,
                       size=size)
    say(f"Loaded {len(train):,} training / {len(test):,} evaluation images of {source.spec} "
        f"({time.perf_counter() - t0:.1f}s), the subsets run {parent['run_id']!r} used")
    with warehouse.connect(read_only=True) as con:
        stored = np.array([r[0] for r in con.execute(
            "select example_id from prediction_rows where run_id = ? order by example_id",
            [parent["run_id"]]).fetchall()], dtype=np.int64)
    if not np.array_equal(stored, np.sort(np.asarray(test.indices, dtype=np.int64))):
        raise DataError(f"{source.spec} no longer gives the {len(stored):,} evaluation examples run "
                        f"{parent['run_id']!r} was evaluated on ({len(test):,} now): the experiment would not be "
                        f"comparable")
    mean = torch.tensor(meta["mean"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return _Data(to_device_images(train.images, device), torch.from_numpy(train.labels.astype(np.int64)).to(device),
                 to_device_images(test.images, device), test, train.labels.astype(np.int64),
                 list(meta["class_names"]), mean, std, state, _sha256_file(ckpt), meta)


def _train_arm(warehouse: Warehouse, data: _Data, parent: dict[str, Any], exp_id: str, arm: augment.ArmPlan | None,
               seed: int, run_id: str, options: dict[str, Any], *, keep_checkpoints: bool, progress: bool,
               say) -> ArmResult:
    """Fine-tune one arm and store it as a run, in one transaction."""
    import torch

    started = utcnow()
    x_train, y_train, transform = data.x_train, data.y_train, None
    if arm is not None and arm.kind == "oversample":
        idx = torch.from_numpy(augment.oversample_index(data.labels_train, arm.params["classes"],
                                                        share=arm.params["share"], seed=seed)).to(x_train.device)
        x_train, y_train = x_train[idx], y_train[idx]
    elif arm is not None:
        aug_gen = torch.Generator().manual_seed(int(hashlib.sha256(f"augment:{seed}".encode()).hexdigest()[:12], 16))
        transform = augment.build([arm.augment_spec()], data.x_train.shape[-1], generator=aug_gen)
    out = fine_tune(data.state_dict, len(data.class_names), x_train, y_train, data.x_eval,
                    data.test.labels.astype(np.int64), run_id=run_id, epochs=options["epochs"],
                    batch_size=options["batch_size"], head_lr=options["head_lr"], backbone_lr=options["backbone_lr"],
                    seed=seed, mean_t=data.mean_t, std_t=data.std_t, transform=transform, progress=progress, say=say)
    preds = prediction_table(run_id, data.test.indices, data.test.labels, probs=softmax(out.logits),
                             image_uris=data.test.uris)
    failures = failure_table(run_id, preds, lambda pos: data.test.images[pos])
    accuracy = float((preds.column("pred").to_numpy() == data.test.labels).mean())
    arm_name = CONTROL if arm is None else arm.arm
    cfg = parent["config"]
    config = {
        **{k: cfg.get(k) for k in ("data", "limit_train", "limit_test", "image_size", "pretrained", "weights",
                                   "train_split", "eval_split", "mean", "std", "n_train", "n_eval")},
        **options, "seed": cfg.get("seed", 0), "arm_seed": seed, "experiment_id": exp_id, "arm": arm_name,
        "from_run": parent["run_id"], "change": None if arm is None else arm.to_dict(),
        "batches_sha256": out.batches_sha256, "order_sha256": out.order_sha256,
        "checkpoint_sha256": data.ckpt_sha256, "optimizer": "AdamW", "schedule": "cosine per step to 0",
    }
    ckpt = None
    if keep_checkpoints:
        ckpt = warehouse.artifact_dir(run_id) / f"model-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}.pt"
        save_checkpoint(ckpt, out.model, class_names=data.class_names, mean=data.meta["mean"], std=data.meta["std"],
                        image_size=data.x_train.shape[-1])
    cluster = {} if arm is None else arm.cluster
    arm_row = pa.table({
        "experiment_id": [exp_id], "run_id": [run_id], "parent_run_id": [parent["run_id"]], "arm": [arm_name],
        "is_control": [arm is None], "seed": pa.array([seed], pa.int32()),
        "rank": pa.array([cluster.get("rank")], pa.int32()), "dimension": [None if arm is None else "fix"],
        "cluster_id": pa.array([cluster.get("cluster_id")], pa.int32()), "recommendation": [cluster.get("name")],
        "change": [None if arm is None else json.dumps(arm.to_dict(), default=str)],
        "epochs": pa.array([options["epochs"]], pa.int32()), "batches_sha256": [out.batches_sha256],
        "checkpoint_sha256": [data.ckpt_sha256], "seconds": [out.seconds], "created_at": [utcnow()],
    })
    try:
        with warehouse.transaction() as con:
            write_run(con, run_id, kind="train", class_names=data.class_names, dataset=parent["dataset"],
                      eval_split=parent["eval_split"], model="resnet18",
                      checkpoint_path=warehouse.artifact_ref(ckpt) if ckpt is not None else None,
                      parent_run_id=parent["run_id"], config=config)
            store_results(con, run_id, preds, failures)
            delete_rows(con, "training_log", {"run_id": run_id})
            insert_arrow(con, "training_log", log_table(out.log_rows))
            delete_rows(con, "experiment_arms", {"run_id": run_id})
            insert_arrow(con, "experiment_arms", arm_row)
            record_stage(con, run_id, STAGE, started_at=started, details={
                "experiment_id": exp_id, "arm": arm_name, "seed": seed, "accuracy": accuracy})
    except BaseException:
        if ckpt is not None:
            ckpt.unlink(missing_ok=True)
        raise
    return ArmResult(run_id, arm_name, seed, accuracy, out.seconds)


def _todo(warehouse: Warehouse, exp_id: str, parent: str, name: str, arms, seeds: int):
    """(done, todo): ArmResults already stored, and (seed, arm or None, run_id) still to train."""
    with warehouse.connect(read_only=True) as con:
        stored = {(r[0], r[1]): r[2] for r in con.execute(
            "select a.arm, a.seed, m.accuracy from experiment_arms a left join run_metrics m using (run_id) "
            "where a.experiment_id = ?", [exp_id]).fetchall()}
        names = {r[0] for r in con.execute("select run_id from runs").fetchall()}
    done, todo = [], []
    for seed in range(seeds):
        for arm in [None, *arms]:
            arm_name = CONTROL if arm is None else arm.arm
            run_id = arm_run_id(parent, name, arm_name, seed)
            if (arm_name, seed) in stored:
                done.append(ArmResult(run_id, arm_name, seed, stored[(arm_name, seed)], resumed=True))
            elif run_id in names:
                raise LensError(f"A run named {run_id!r} exists and is not an arm of experiment {exp_id!r}: "
                                f"rename the experiment with --name")
            else:
                todo.append((seed, arm, run_id))
    return done, todo


def effects(warehouse: Warehouse, exp_id: str) -> list[dict[str, Any]]:
    """The experiment's overall effects (``recommendation_effects`` scope 'overall'), best first."""
    with warehouse.connect(read_only=True) as con:
        cur = con.execute(
            "select o.*, c.delta as cluster_delta, c.delta_lower as cluster_delta_lower, "
            "c.delta_upper as cluster_delta_upper, c.arm_share as cluster_arm_share, "
            "c.control_share as cluster_control_share, c.n as cluster_n, c.verdict as cluster_verdict "
            "from recommendation_effects o left join recommendation_effects c on c.experiment_id = o.experiment_id "
            "and c.arm = o.arm and c.scope = 'cluster' and c.targeted "
            "where o.experiment_id = ? and o.scope = 'overall' order by o.delta desc", [exp_id])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def run(warehouse: Warehouse, *, from_run: str, name: str = DEFAULT_NAME, epochs: int = D.EXPERIMENT_EPOCHS, top: int = D.EXPERIMENT_TOP,
        seeds: int = D.EXPERIMENT_SEEDS, batch_size: int | None = None, head_lr: float | None = None,
        backbone_lr: float | None = None, device: str = "auto", keep_checkpoints: bool = False,
        force: bool = False, progress: bool = True, echo: Callable[[str], None] | None = None) -> ExperimentResult:
    """Plan (or resume) the experiment on ``from_run`` and train every arm not stored yet (module docstring)."""
    say = echo or (lambda _msg: None)
    t0 = time.perf_counter()
    for opt, val in (("--epochs", epochs), ("--top", top), ("--seeds", seeds)):
        if val < 1:
            raise LensError(f"{opt} must be at least 1, got {val}")
    if not _NAME.match(name):
        raise LensError(f"--name {name!r}: use letters, digits, '_' and '-' only")
    with warehouse.connect() as con:  # read-write: applies migrations a new Lens brought
        parent = _parent(con, from_run)
    options = _options(parent, epochs=epochs, top=top, batch_size=batch_size, head_lr=head_lr,
                       backbone_lr=backbone_lr)
    exp_id, arms, skipped = _open_experiment(warehouse, parent, name, options, top=top, force=force, say=say)
    for why in skipped:
        say(f"skipped {why}")
    result = ExperimentResult(exp_id, parent["run_id"], planned=[a.to_dict() for a in arms], skipped=skipped)
    done, todo = _todo(warehouse, exp_id, parent["run_id"], name, arms, seeds)
    for d in done:
        say(f"arm {d.run_id}: done already (accuracy {d.accuracy:.2%}), skipped")
    result.arms.extend(done)
    if todo:
        dev = resolve_device(device)
        data = _load(warehouse, parent, dev, say)
        for i, (seed, arm, run_id) in enumerate(todo, 1):
            what = "no change" if arm is None else f"{arm.kind} {arm.params} because {arm.reason}"
            say(f"arm {i}/{len(todo)} {run_id}: {what}")
            res = _train_arm(warehouse, data, parent, exp_id, arm, seed, run_id, options,
                             keep_checkpoints=keep_checkpoints, progress=progress, say=say)
            say(f"arm {run_id}: accuracy {res.accuracy:.2%} in {res.seconds:.0f}s")
            result.arms.append(res)
    result.effects = effects(warehouse, exp_id)
    result.seconds = time.perf_counter() - t0
    return result


__all__ = ["ArmResult", "BatchDigest", "ExperimentResult", "FineTuned", "arm_run_id", "checkpoint_file", "effects",
           "fine_tune", "plan", "run"]
