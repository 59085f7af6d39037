"""Label corrections: the labels a run trains and evaluates with after annotators corrected some.

``label_corrections`` (migration 070) is append-only: ``lens labels import`` appends, and the
latest row per (split, example_id) counts. A correction names a dataset example by its split
('train', or the evaluation split such as 'test') and its index there, so it applies to any
run on the same dataset. ``lens train --labels-from RUN`` uses RUN's corrections and, through
``runs.config.labels_from``, those of the runs RUN itself took labels from (a second round of
relabelling keeps the first round's corrections).

Plain functions; the stages (train, relabel, compare) call them with their own connection.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: CSV cells a spreadsheet would run as a formula start with these; they are written with a
#: leading ``'`` and read back without it (as ``lens verdicts export`` does)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """A CSV cell that a spreadsheet shows as text (``'`` before a formula-like start)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_unsafe(value: str) -> str:
    """Undo :func:`csv_safe`."""
    if value.startswith("'") and value[1:].startswith(FORMULA_START):
        return value[1:]
    return value


@dataclass(frozen=True)
class Correction:
    """The label that counts for one dataset example."""

    split: str
    example_id: int
    old_label: int
    new_label: int
    run_id: str
    who: str


def label_chain(con, run_id: str) -> list[str]:
    """``run_id`` and the runs it took labels from (``config.labels_from.run``), oldest first."""
    chain: list[str] = []
    current: str | None = run_id
    while current is not None and current not in chain:
        chain.append(current)
        row = con.execute("select config from runs where run_id = ?", [current]).fetchone()
        try:
            config = json.loads(row[0]) if row and row[0] else {}
        except ValueError:
            config = {}
        source = config.get("labels_from") if isinstance(config, dict) else None
        current = source.get("run") if isinstance(source, dict) else None
    return chain[::-1]


def latest(con, run_ids: Sequence[str]) -> dict[tuple[str, int], Correction]:
    """The correction that counts per (split, example_id) among those made on ``run_ids``.

    The latest import wins (then the latest annotation time, then the id), whichever run of
    the chain it was made on. Corrections that give back the old label are included: they
    say the given label was checked and kept.
    """
    if not run_ids:
        return {}
    rows = con.execute(
        """
        select split, example_id, old_label, new_label, run_id, who
        from label_corrections
        where list_contains(?, run_id)
        qualify row_number() over (
            partition by split, example_id
            order by imported_at desc, annotated_at desc nulls last, correction_id desc
        ) = 1
        """,
        [list(run_ids)],
    ).fetchall()
    return {(r[0], int(r[1])): Correction(r[0], int(r[1]), int(r[2]), int(r[3]), r[4], r[5]) for r in rows}


def apply(indices: np.ndarray, labels: np.ndarray, split: str,
          corrections: Mapping[tuple[str, int], Correction]) -> tuple[np.ndarray, list[dict]]:
    """Labels of one split with the corrections applied.

    Parameters
    ----------
    indices : ndarray of int, shape (n,)
        Dataset indices of the examples (``Split.indices``).
    labels : ndarray of int, shape (n,)
        Their labels as the dataset gives them.
    split : str
        The dataset split they come from ('train', 'test', ...).
    corrections : mapping (split, example_id) -> Correction
        From :func:`latest`.

    Returns
    -------
    labels : ndarray of int64, shape (n,)
        A new array; unchanged where there is no correction.
    changed : list of dict
        ``{"example_id", "old", "new"}`` for every example whose label the corrections
        changed (``old``: what the dataset says), in index order.
    """
    out = np.asarray(labels, dtype=np.int64).copy()
    changed = []
    wanted = {eid: c for (s, eid), c in corrections.items() if s == split}
    if not wanted:
        return out, changed
    for pos, eid in enumerate(np.asarray(indices).tolist()):
        c = wanted.get(int(eid))
        if c is not None and c.new_label != out[pos]:
            changed.append({"example_id": int(eid), "old": int(out[pos]), "new": int(c.new_label)})
            out[pos] = c.new_label
    return out, changed
