"""The export's rows (:func:`collect`): a run's ranked annotation candidates, the reviewers'
verdicts on them, the nearest same-label training images of confirmed errors, and the images.

Only reads the warehouse; :mod:`.writer` turns the rows into files."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from lens.errors import LensError
from lens.warehouse import Warehouse, class_names, require_run

from .common import COLUMNS, DEFAULT_NEIGHBOURS, DEFAULT_TOP, ExportResult


def _reviews(con, run_id: str) -> dict[int, str]:
    """example_id -> 'confirmed' | 'rejected' | 'disputed' from the latest data_quality verdicts
    on answers tagged annotation_issue."""
    rows = con.execute(
        """
        select h.example_id,
               count(*) filter (where v.verdict = 'agree') as agree,
               count(*) filter (where v.verdict = 'disagree') as disagree
        from latest_verdicts as v
        join hypotheses as h on h.hypothesis_id = v.hypothesis_id
        join hypothesis_dimensions as d on d.hypothesis_id = v.hypothesis_id and d.dimension = 'data_quality'
        where h.run_id = ? and v.dimension = 'data_quality' and d.tag = 'annotation_issue'
        group by h.example_id
        """,
        [run_id],
    ).fetchall()
    out = {}
    for ex, agree, disagree in rows:
        if agree and not disagree:
            out[int(ex)] = "confirmed"
        elif disagree and not agree:
            out[int(ex)] = "rejected"
        elif agree and disagree:
            out[int(ex)] = "disputed"
    return out


def _signals(diagnosis: str | None) -> str | None:
    try:
        d = json.loads(diagnosis or "null")
        sig = (d or {}).get("label_error", {}).get("signals")
    except (ValueError, AttributeError):
        return None
    if not sig:
        return None
    return json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in sig.items()}, sort_keys=True)


def _same_label_neighbours(con, run_id: str, confirmed: list[dict[str, Any]], k: int) -> tuple[dict[int, list], str | None]:
    """example_id -> [(train example_id, cosine)] nearest training images with the same given label."""
    if not confirmed or k <= 0:
        return {}, None
    ids = [c["example_id"] for c in confirmed]
    labels = sorted({c["label"] for c in confirmed})
    q = con.execute(
        "select example_id, vector from features where run_id = ? and split = 'eval' and list_contains(?, example_id)",
        [run_id, ids],
    ).fetchall()
    eval_vec = {int(e): np.asarray(v, dtype=np.float32) for e, v in q}
    out: dict[int, list] = {}
    if len(eval_vec) == len(ids):
        train = con.execute(
            "select example_id, label, vector from features where run_id = ? and split = 'train' "
            "and list_contains(?, label) order by example_id",
            [run_id, labels],
        ).fetchall()
        if train:
            t_ids = np.array([r[0] for r in train], dtype=np.int64)
            t_lab = np.array([r[1] for r in train], dtype=np.int64)
            T = np.stack([np.asarray(r[2], dtype=np.float32) for r in train])
            T /= np.maximum(np.linalg.norm(T, axis=1, keepdims=True), 1e-12)
            for c in confirmed:
                v = eval_vec[c["example_id"]]
                v = v / max(float(np.linalg.norm(v)), 1e-12)
                pos = np.flatnonzero(t_lab == c["label"])
                if not len(pos):
                    out[c["example_id"]] = []
                    continue
                sims = T[pos] @ v
                order = np.lexsort((t_ids[pos], -sims))[:k]
                out[c["example_id"]] = [(int(t_ids[pos][i]), float(sims[i])) for i in order]
            return out, None
    # no features: the evidence's nearest neighbours that carry the given label
    for c in confirmed:
        ids_, labs, sims = c.get("neighbour_ids"), c.get("neighbour_labels"), c.get("neighbour_sims")
        if ids_ is None or labs is None:
            continue
        sims = sims if sims is not None else [None] * len(ids_)
        out[c["example_id"]] = [(int(i), None if s is None else float(s))
                                for i, lab, s in zip(ids_, labs, sims) if lab == c["label"]][:k]
    return out, ("the run has no features: training neighbours come from the 10 nearest in its evidence"
                 if out else "the run has no features and no neighbours in its evidence: no training images listed")


def _train_images(dataset: str | None, ids: list[int]) -> tuple[dict[int, bytes], str | None]:
    """PNG bytes of training images by dataset index, or why they could not be read."""
    if not ids:
        return {}, None
    from lens.datasets import encode_png, open_source

    try:
        source = open_source(dataset) if dataset else None
        if source is None:
            return {}, "the run names no dataset: training images are listed without pictures"
        positions = source.find("train", ids)
        out = {}
        for eid, pos in zip(ids, positions):
            split = source.load("train", positions=[int(pos)])
            out[int(eid)] = encode_png(split.images[0])
        return out, None
    except LensError as exc:
        return {}, f"training images could not be read from {dataset!r} ({exc}): listed without pictures"


def _scored(con, run_id: str) -> int:
    """How many failures of the run have a label-error score; refuses a run with none."""
    scored = con.execute("select count(*) from annotation_candidates where run_id = ?", [run_id]).fetchone()[0]
    if not scored:
        raise LensError(f"Run {run_id!r} has no label-error scores yet: run `lens evidence --run {run_id}` first.")
    return scored


def _candidate_rows(con, run_id: str, top: int) -> list[dict[str, Any]]:
    """The top candidates by rank plus every confirmed error, best first, each with its ``review``."""
    reviews = _reviews(con, run_id)
    confirmed_ids = [e for e, r in reviews.items() if r == "confirmed"]
    cur = con.execute(
        """
        select c.*, e.neighbour_sims
        from annotation_candidates as c
        left join evidence as e on e.run_id = c.run_id and e.example_id = c.example_id
        where c.run_id = ? and (c.rank <= ? or list_contains(?, c.example_id))
        order by c.rank
        """,
        [run_id, top, confirmed_ids],
    )
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, values)) for values in cur.fetchall()]
    for r in rows:
        r["review"] = reviews.get(int(r["example_id"]), "")
    return rows


def _eval_images(con, run_id: str, eval_split: str, rows: list[dict[str, Any]]) -> dict[str, bytes]:
    """``{'<eval split>-<id>.png': PNG}`` of the candidates' stored failure images."""
    pngs = {}
    ids = [int(r["example_id"]) for r in rows]
    for ex, png in con.execute(
        "select example_id, image_png from failures where run_id = ? and list_contains(?, example_id)",
        [run_id, ids],
    ).fetchall():
        if png is not None:
            pngs[f"{eval_split}-{int(ex)}.png"] = bytes(png)
    return pngs


def _add_train_images(pngs: dict[str, bytes], warnings: list[str], dataset: str | None,
                      near: dict[int, list]) -> None:
    """Add ``train-<id>.png`` for every listed training neighbour (or a warning why not)."""
    train_ids = sorted({t for lst in near.values() for t, _ in lst})
    if not train_ids:
        return
    train_png, why = _train_images(dataset, train_ids)
    if why:
        warnings.append(why)
    for t, png in train_png.items():
        pngs[f"train-{t}.png"] = png


def _num(v, digits=4):
    return None if v is None or v != v else round(float(v), digits)


def _candidate_row(r: dict[str, Any], run_id: str, eval_split: str, pngs: dict[str, bytes]) -> dict[str, Any]:
    """One export row for an evaluation failure."""
    ex = int(r["example_id"])
    image = f"images/{eval_split}-{ex}.png"
    return {
        "rank": int(r["rank"]), "run_id": run_id, "split": eval_split, "example_id": ex,
        "image": image if f"{eval_split}-{ex}.png" in pngs else None,
        "given_label": r["given_name"], "suggested_label": r["suggested_name"],
        "label_error_score": _num(r["label_error_score"]), "ambiguity_score": _num(r["ambiguity_score"]),
        "above_threshold": None if r["candidate"] is None else bool(r["candidate"]),
        "review": r["review"], "confidence": _num(r["confidence"]), "true_prob": _num(r["true_prob"]),
        "label_quality": _num(r["label_quality"]), "neighbour_true_share": _num(r["neighbour_true_share"]),
        "neighbour_pred_share": _num(r["neighbour_pred_share"]), "tag": r.get("tag"),
        "tag_check": r.get("tag_check"), "signals": _signals(r.get("diagnosis")),
        "neighbour_of": None, "similarity": None, "corrected_label": None, "annotator": None, "note": None,
    }


def _neighbour_row(r: dict[str, Any], run_id: str, t: int, sim, pngs: dict[str, bytes]) -> dict[str, Any]:
    """One export row for a training image listed under the confirmed error ``r``."""
    return {
        **{k: None for k in COLUMNS}, "rank": int(r["rank"]), "run_id": run_id, "split": "train",
        "example_id": t, "image": f"images/train-{t}.png" if f"train-{t}.png" in pngs else None,
        "given_label": r["given_name"],  # no suggestion: the model's prediction is for the candidate
        "review": "check: training image with the same label as a confirmed error",
        "neighbour_of": int(r["example_id"]), "similarity": _num(sim),
    }


def _export_rows(rows: list[dict[str, Any]], near: dict[int, list], run_id: str, eval_split: str,
                 pngs: dict[str, bytes]) -> list[dict[str, Any]]:
    """Each candidate's row, followed by the rows of its training neighbours."""
    out: list[dict[str, Any]] = []
    for r in rows:
        out.append(_candidate_row(r, run_id, eval_split, pngs))
        for t, sim in near.get(int(r["example_id"]), []):
            out.append(_neighbour_row(r, run_id, t, sim, pngs))
    return out


def collect(warehouse: Warehouse, *, run_id: str | None = None, top: int = DEFAULT_TOP,
            neighbours: int = DEFAULT_NEIGHBOURS, images: bool = True) -> tuple[list[dict[str, Any]], ExportResult, dict]:
    """The export's rows (best first), a result without ``out_dir``, and ``{image name: PNG}``."""
    if top < 1:
        raise LensError(f"--top must be at least 1, got {top}")
    with warehouse.connect() as con:  # read-write on purpose: the review app may call this (ARCHITECTURE)
        run_id = require_run(con, run_id)
        dataset, eval_split = con.execute("select dataset, eval_split from runs where run_id = ?", [run_id]).fetchone()
        eval_split = eval_split or "eval"
        names = class_names(con, run_id)
        scored = _scored(con, run_id)
        rows = _candidate_rows(con, run_id, top)
        confirmed = [r for r in rows if r["review"] == "confirmed"]
        near, near_note = _same_label_neighbours(con, run_id, confirmed, neighbours)
        pngs = _eval_images(con, run_id, eval_split, rows) if images else {}
        detection = rows[0].get("detection_message") if rows else None

    warnings = [near_note] if near_note else []
    if images:
        _add_train_images(pngs, warnings, dataset, near)
    out = _export_rows(rows, near, run_id, eval_split, pngs)
    n_neigh = sum(1 for r in out if r["split"] == "train")
    result = ExportResult(run_id, None, len(rows), len(confirmed), n_neigh, len(pngs), int(scored), detection, warnings)
    return out, result, {"class_names": names, "eval_split": eval_split, "pngs": pngs}
