"""``lens ingest``: bring predictions from any model into the warehouse.

Input: a Parquet or CSV file with one row per evaluation example:

=================  ===========================================================
``id``             integer id (or any text: then rows are numbered and the text
                   kept in ``predictions.source_id``)
``label``          true class: a class name or a class id
probabilities      a list column ``probs``, or one column per class named
                   ``prob_<class name>`` (or ``prob_<class id>``)
  -- or --
``pred``,          predicted class (name or id) and its probability, when the
``confidence``     full vector is not available
``image``          optional: image path (relative to the predictions file) or URI;
                   confined to the predictions file's folder and the ``--images``
                   folder unless ``allow_images_anywhere``
``index``          optional: the example's index in the ``--images`` dataset source
=================  ===========================================================

Everything is validated before anything is written (unknown classes, probability rows
not summing to 1 within 1e-3, NaN, text where numbers belong, duplicate ids and column
names, ids that do not fit a signed 64-bit integer, more than ``MAX_CLASSES`` classes,
missing, oversized or out-of-folder images); the error lists the first offending rows.
Ids are stored exactly as given, or refused: never wrapped, rounded or renumbered (text ids
are numbered by row and kept verbatim in ``predictions.source_id``). Then one transaction
writes ``runs``, ``classes``, ``predictions`` and ``failures``.

**Features** (``features=FILE``, :func:`read_features`): a model's embeddings, so that
``lens evidence`` finds nearest neighbours for an ingested run. A Parquet file with columns

=================  ===========================================================
``id``             the example's id (``example_id`` is accepted as the name too).
                   ``eval`` rows: an id of the run's predictions (the same text, for
                   a predictions file with text ids). ``train`` rows: whole numbers,
                   the training examples' own ids (neighbours are shown by them)
``split``          ``train`` (the neighbours' pool) or ``eval`` (the evaluated examples)
``vector``         list of numbers, the same length on every row, all finite
``label``          the training example's class (name or id); required on ``train``
                   rows; on ``eval`` rows optional and then it must equal the
                   predictions' label
=================  ===========================================================

or a ``.npz`` (``numpy.savez``) with the same names as arrays: ``id`` (N,), ``split``
(N,), ``vector`` (N, D), ``label`` (N,); it is loaded with ``allow_pickle=False``.
Features come with the predictions (one transaction writes both), or later for an
existing run (``run_id`` and ``features``, no ``predictions``): then they replace the
run's features only with ``force`` when it has some, and the run's evidence rows (computed
without them) are deleted in the same transaction, so the next ``lens evidence`` computes
neighbours for every failure.

Modules: :mod:`.columns` reads a table file and checks its columns, :mod:`.predictions` the
predictions' classes, ids, outputs and images, :mod:`.features` a features file; this one stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from lens.datasets import open_source
from lens.errors import DataError
from lens.predictions import failure_table, prediction_table, store_results, write_run
from lens.stages.ingest.columns import _class_ids, read_table
from lens.stages.ingest.features import FEATURE_SPLITS, MAX_FEATURE_DIM, FeatureCounts, read_features
from lens.stages.ingest.predictions import (MAX_CLASSES, PROB_TOLERANCE, class_names_of, example_ids_of,
                                            image_reader, model_outputs, read_predictions_table)
from lens.warehouse import Warehouse, delete_rows, record_stage, replace_rows, utcnow

__all__ = ["FEATURE_SPLITS", "MAX_CLASSES", "MAX_FEATURE_DIM", "PROB_TOLERANCE", "REPLACED_TABLES", "FeatureCounts",
           "IngestResult", "add_features", "read_features", "read_table", "run"]

#: what `--force` replaces: everything derived from the old predictions. Hypotheses,
#: embeddings, clusters and verdicts (people's work) are kept, as `lens train --force` does.
REPLACED_TABLES = ("prediction_rows", "failures", "samples", "training_log", "features", "evidence", "stage_runs")


@dataclass
class IngestResult:
    run_id: str
    rows: int
    failures: int
    classes: list[str]
    images: int
    features: FeatureCounts | None = None
    #: evidence rows deleted because new features make them stale (features-only ingest)
    evidence_cleared: int = 0


def run(
    warehouse: Warehouse,
    *,
    predictions: str | Path | None = None,
    run_id: str | None = None,
    images: str | None = None,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    force: bool = False,
    features: str | Path | None = None,
    allow_images_anywhere: bool = False,
) -> IngestResult:
    """Validate a predictions file (and features) and store it as a run (see the module docstring).

    With ``features`` and no ``predictions``, add features to the existing run ``run_id``
    (:func:`add_features`).
    """
    if predictions is None:
        if features is None:
            raise DataError("Nothing to ingest: give --predictions FILE (and optionally --features FILE), "
                            "or --run RUN --features FILE to add features to an existing run")
        if run_id is None:
            raise DataError("--features without --predictions adds features to an existing run: name it with --run")
        return add_features(warehouse, run_id=run_id, features=features, force=force)
    started = utcnow()
    path = Path(predictions)
    table = read_predictions_table(path)
    source = open_source(images, classes=classes) if images else None
    class_names = class_names_of(table, classes, source, path)
    example_ids, source_ids = example_ids_of(table, path)
    labels = _class_ids(table.column("label"), class_names, "label", path)
    probs, pred, confidence = model_outputs(table, class_names, path)
    image_uris, image_for, split = image_reader(table, path, images=images, source=source, split=split,
                                                allow_anywhere=allow_images_anywhere)
    run_id = run_id or path.stem
    preds = prediction_table(run_id, example_ids, labels, probs=probs, pred=pred, confidence=confidence,
                             image_uris=image_uris, source_ids=source_ids)
    # Decode failure images before opening the warehouse: a bad image errors with nothing written.
    failures = failure_table(run_id, preds, image_for)
    feats = counts = None
    if features is not None:
        feats, counts = read_features(
            features, run_id=run_id, class_names=class_names, example_ids=example_ids, labels=labels,
            source_ids=source_ids,
        )
    with warehouse.transaction() as con:
        _clear_run(con, run_id, force=force)
        write_run(con, run_id, kind="ingest", class_names=class_names, dataset=images, eval_split=split,
                  config={"predictions": str(path), "images": images, "split": split})
        store_results(con, run_id, preds, failures)
        record_stage(
            con, run_id, "ingest", started_at=started,
            details={"rows": preds.num_rows, "failures": failures.num_rows, "file": str(path)},
        )
        if feats is not None:
            _store_features(con, run_id, feats, counts, features, started)
    n_img = int(pc.sum(pc.invert(pc.is_null(failures.column("image_png")))).as_py() or 0)
    return IngestResult(run_id, preds.num_rows, failures.num_rows, class_names, n_img, features=counts)


def _clear_run(con, run_id: str, *, force: bool) -> None:
    """Refuse an existing run without ``force``; with it, delete what the new predictions replace."""
    exists = con.execute("select count(*) from runs where run_id = ?", [run_id]).fetchone()[0]
    if exists and not force:
        raise DataError(f"Run {run_id!r} already exists; pick another --run name or pass --force to replace it")
    if exists:
        for table_name in REPLACED_TABLES:
            delete_rows(con, table_name, {"run_id": run_id})

def _store_features(con, run_id: str, feats: pa.Table, counts: FeatureCounts, file, started) -> None:
    replace_rows(con, "features", {"run_id": run_id}, feats)
    record_stage(con, run_id, "features", started_at=started,
                 details={"file": str(file), "train": counts.train, "eval": counts.eval, "dim": counts.dim})


def add_features(warehouse: Warehouse, *, run_id: str, features: str | Path, force: bool = False) -> IngestResult:
    """Add (or with ``force`` replace) the features of an existing run.

    The run's evidence rows are deleted in the same transaction: they were computed without
    these vectors, and ``lens evidence`` recomputes failures that have none.
    """
    started = utcnow()
    with warehouse.connect(read_only=True) as con:
        row = con.execute("select count(*) from runs where run_id = ?", [run_id]).fetchone()
        if not row[0]:
            runs = [r[0] for r in con.execute("select run_id from runs order by created_at").fetchall()]
            raise DataError(f"No run named {run_id!r} to add features to. Runs: {', '.join(runs) or 'none'}")
        names = [r[0] for r in con.execute(
            "select class_name from classes where run_id = ? order by class_id", [run_id]).fetchall()]
        preds = con.execute(
            "select example_id, label, source_id from prediction_rows where run_id = ? order by example_id", [run_id]
        ).to_arrow_table()
        have = con.execute("select count(*) from features where run_id = ?", [run_id]).fetchone()[0]
        n_fail = con.execute("select count(*) from failures where run_id = ?", [run_id]).fetchone()[0]
    if have and not force:
        raise DataError(f"Run {run_id!r} already has {have:,} feature rows; pass --force to replace them")
    src = preds.column("source_id")
    source_ids = src.to_pylist() if src.null_count < len(src) else None
    feats, counts = read_features(
        features, run_id=run_id, class_names=names, example_ids=preds.column("example_id").to_numpy(),
        labels=preds.column("label").to_numpy(), source_ids=source_ids,
    )
    with warehouse.transaction() as con:
        now = con.execute("select count(*) from prediction_rows where run_id = ?", [run_id]).fetchone()[0]
        if now != preds.num_rows:
            raise DataError(f"Run {run_id!r} changed while its features were read; run the command again")
        cleared = con.execute("select count(*) from evidence where run_id = ?", [run_id]).fetchone()[0]
        delete_rows(con, "evidence", {"run_id": run_id})
        delete_rows(con, "stage_runs", {"run_id": run_id, "stage": "evidence"})
        _store_features(con, run_id, feats, counts, features, started)
    return IngestResult(run_id, preds.num_rows, n_fail, names, 0, features=counts, evidence_cleared=cleared)
