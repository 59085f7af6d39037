"""``lens compare RUN_A RUN_B``: per-class F1 deltas, and how each cluster's failures fared.

Typical use: RUN_B was trained with ``--augment-from RUN_A``; the comparison shows which
classes improved and whether the failures in the clusters the augmentation targeted were
fixed in RUN_B (matched by example id on the same evaluation split).

Labels: when RUN_B was trained with ``--labels-from`` (corrected labels), ``labels`` lists
every evaluation example whose label differs between the runs, with each run's prediction
(so a fixed metric can be told from a fixed model), and ``label_changes`` counts the
training and evaluation labels each run's corrections changed (``runs.config.labels_from``).
Each run's accuracy is measured against its own labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from lens.errors import LensError
from lens.warehouse import Warehouse, load_query, require_run


@dataclass
class Comparison:
    run_a: str
    run_b: str
    accuracy_a: float | None
    accuracy_b: float | None
    classes: pd.DataFrame
    clusters: pd.DataFrame
    shared_examples: int
    labels: pd.DataFrame = field(default_factory=pd.DataFrame)
    label_changes: dict = field(default_factory=dict)


def run(warehouse: Warehouse, *, run_a: str, run_b: str) -> Comparison:
    if run_a == run_b:
        raise LensError("Give two different runs to compare")
    with warehouse.connect(read_only=True) as con:
        run_a = require_run(con, run_a)
        run_b = require_run(con, run_b)
        params = {"a": run_a, "b": run_b}
        classes = con.execute(load_query("compare_classes"), params).df()
        clusters = con.execute(load_query("compare_clusters"), params).df()
        acc = dict(
            con.execute("select run_id, accuracy from run_metrics where run_id in (?, ?)", [run_a, run_b]).fetchall()
        )
        shared = con.execute(
            "select count(*) from predictions a join predictions b on a.example_id = b.example_id"
            " where a.run_id = ? and b.run_id = ?",
            [run_a, run_b],
        ).fetchone()[0]
        labels = con.execute(load_query("compare_labels"), params).df()
        changes = {}
        for run in (run_a, run_b):
            cfg = con.execute("select config from runs where run_id = ?", [run]).fetchone()[0]
            try:
                info = (json.loads(cfg or "{}") or {}).get("labels_from")
            except (ValueError, AttributeError):
                info = None
            if isinstance(info, dict):
                changes[run] = {"from": info.get("run"), "train": len(info.get("train") or []),
                                "eval": len(info.get("eval") or []), "corrections": info.get("corrections")}
    return Comparison(run_a, run_b, acc.get(run_a), acc.get(run_b), classes, clusters, shared, labels, changes)

