"""The relabelling loop: suspected label errors out to annotators, their labels back in.

``lens export relabel --run R [--top N] --out DIR`` (:func:`export`) writes, for the run's
annotation candidates (the view ``annotation_candidates``: failures ranked by
``label_error_score``, the suggested label being the prediction):

=============================  ================================================================
``candidates.csv``             one row per image to check (columns below), best first
``label_studio_tasks.json``    the same rows as Label Studio tasks, the suggested label as a
                               pre-annotation (``predictions``), images by reference
``label_studio_config.xml``    the labelling interface: the image, and one choice per class
``images/<split>-<id>.png``    every image the rows point to
``README.txt``                 how to load it into Label Studio and bring the labels back
=============================  ================================================================

Rows: the top ``N`` candidates by rank, plus every failure a reviewer *confirmed* as a label
error (a latest ``agree`` verdict on the ``data_quality`` answer of a hypothesis tagged
``annotation_issue``, and no reviewer disagreeing) whatever its rank. For each confirmed error
the ``neighbours`` nearest training images *with the same given label* follow it (cosine of the
run's ``features``; without features, the evidence's 10 nearest neighbours that carry the
label), so annotators can check whether the same mistake sits in the training split.

CSV columns: ``rank, run_id, split, example_id, image, given_label, suggested_label,
label_error_score, ambiguity_score, above_threshold, review, confidence, true_prob,
label_quality, neighbour_true_share, neighbour_pred_share, tag, tag_check, signals,
neighbour_of, similarity, corrected_label, annotator, note``; ``split`` is the dataset split
('train' for training neighbours, else the run's evaluation split), ``neighbour_of`` the
candidate a training row belongs to, and the last three are for annotators to fill.

``lens labels import FILE`` (:func:`import_labels`) reads the annotators' labels back, from the
exported CSV (rows with an empty ``corrected_label`` are skipped) or a Label Studio export
(the JSON export, whose tasks carry ``annotations``, or JSON-MIN, flat rows with a ``label``
field). Every row is checked first: the run (one per file; ``--run`` or the file's
``run_id``), the split ('train' or the run's evaluation split), the example id (an evaluation
example of the run; a training example of its features or dataset), the class name (one of the
run's classes, case aside), the given label when the file states it, and who (a column,
Label Studio's annotator, or ``--who``). Any problem refuses the whole file, naming the rows,
and nothing is written; otherwise the corrections are appended to ``label_corrections`` in one
transaction. Ids are deterministic (run, split, example, label, who, annotation time or file
digest), so importing the same file twice adds nothing.

Then ``lens train --labels-from R`` trains with them (:mod:`lens.corrections`), and ``lens
compare R NEW`` shows what changed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
import pyarrow as pa

from lens.corrections import csv_safe, csv_unsafe
from lens.errors import DataError, LensError
from lens.warehouse import Warehouse, class_names, insert_arrow, require_run, stable_id, utcnow

DEFAULT_TOP = 100
DEFAULT_NEIGHBOURS = 5
#: Label Studio serves local files under this URL (LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true,
#: LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<the export folder>)
DEFAULT_IMAGE_URL = "/data/local-files/?d="
FROM_NAME, TO_NAME = "label", "image"
FILES = ("candidates.csv", "label_studio_tasks.json", "label_studio_config.xml", "README.txt")
COLUMNS = [
    "rank", "run_id", "split", "example_id", "image", "given_label", "suggested_label", "label_error_score",
    "ambiguity_score", "above_threshold", "review", "confidence", "true_prob", "label_quality",
    "neighbour_true_share", "neighbour_pred_share", "tag", "tag_check", "signals", "neighbour_of", "similarity",
    "corrected_label", "annotator", "note",
]
NEW_LABEL_COLUMNS = ("corrected_label", "new_label")
WHO_COLUMNS = ("annotator", "who")
_SHOW = 5
_INT64 = (-(2**63), 2**63 - 1)


@dataclass
class ExportResult:
    run_id: str
    out_dir: Path | None
    candidates: int                 # candidate rows (evaluation failures)
    confirmed: int                  # of them confirmed by a reviewer
    neighbours: int                 # training rows listed under confirmed errors
    images: int                     # image files written
    scored: int                     # failures of the run with a label-error score
    detection: str | None = None    # the run's detection-power message
    warnings: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    run_id: str
    rows: int                       # rows (tasks) in the file
    written: int                    # corrections appended
    already: int                    # corrections already stored (same id)
    blank: int                      # rows without a label (not yet annotated)
    changed: int                    # written corrections whose label differs from the old one
    by_split: dict[str, int] = field(default_factory=dict)


# -- export -------------------------------------------------------------------------------------


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
        scored = con.execute("select count(*) from annotation_candidates where run_id = ?", [run_id]).fetchone()[0]
        if not scored:
            raise LensError(f"Run {run_id!r} has no label-error scores yet: run `lens evidence --run {run_id}` first.")
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
        confirmed = [r for r in rows if r["review"] == "confirmed"]
        near, near_note = _same_label_neighbours(con, run_id, confirmed, neighbours)
        pngs = {}
        if images:
            ids = [int(r["example_id"]) for r in rows]
            for ex, png in con.execute(
                "select example_id, image_png from failures where run_id = ? and list_contains(?, example_id)",
                [run_id, ids],
            ).fetchall():
                if png is not None:
                    pngs[f"{eval_split}-{int(ex)}.png"] = bytes(png)
        detection = rows[0].get("detection_message") if rows else None

    warnings = [near_note] if near_note else []
    train_ids = sorted({t for lst in near.values() for t, _ in lst})
    if images and train_ids:
        train_png, why = _train_images(dataset, train_ids)
        if why:
            warnings.append(why)
        for t, png in train_png.items():
            pngs[f"train-{t}.png"] = png

    def num(v, digits=4):
        return None if v is None or v != v else round(float(v), digits)

    out: list[dict[str, Any]] = []
    for r in rows:
        ex = int(r["example_id"])
        image = f"images/{eval_split}-{ex}.png"
        out.append({
            "rank": int(r["rank"]), "run_id": run_id, "split": eval_split, "example_id": ex,
            "image": image if f"{eval_split}-{ex}.png" in pngs else None,
            "given_label": r["given_name"], "suggested_label": r["suggested_name"],
            "label_error_score": num(r["label_error_score"]), "ambiguity_score": num(r["ambiguity_score"]),
            "above_threshold": None if r["candidate"] is None else bool(r["candidate"]),
            "review": r["review"], "confidence": num(r["confidence"]), "true_prob": num(r["true_prob"]),
            "label_quality": num(r["label_quality"]), "neighbour_true_share": num(r["neighbour_true_share"]),
            "neighbour_pred_share": num(r["neighbour_pred_share"]), "tag": r.get("tag"),
            "tag_check": r.get("tag_check"), "signals": _signals(r.get("diagnosis")),
            "neighbour_of": None, "similarity": None, "corrected_label": None, "annotator": None, "note": None,
        })
        for t, sim in near.get(ex, []):
            out.append({
                **{k: None for k in COLUMNS}, "rank": int(r["rank"]), "run_id": run_id, "split": "train",
                "example_id": t, "image": f"images/train-{t}.png" if f"train-{t}.png" in pngs else None,
                "given_label": r["given_name"],  # no suggestion: the model's prediction is for the candidate
                "review": "check: training image with the same label as a confirmed error",
                "neighbour_of": ex, "similarity": num(sim),
            })
    n_neigh = sum(1 for r in out if r["split"] == "train")
    result = ExportResult(run_id, None, len(rows), len(confirmed), n_neigh, len(pngs), int(scored), detection, warnings)
    return out, result, {"class_names": names, "eval_split": eval_split, "pngs": pngs}


def _csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_safe(r.get(k)) if r.get(k) is not None else "" for k in COLUMNS})
    return buf.getvalue().encode("utf-8")


def _tasks(rows: list[dict[str, Any]], image_url: str, model_version: str) -> list[dict[str, Any]]:
    tasks = []
    for r in rows:
        data = {k: r[k] for k in COLUMNS if k not in ("image", "corrected_label", "annotator", "note")}
        data["image"] = image_url + r["image"] if r["image"] else None
        task: dict[str, Any] = {"data": data}
        if r["suggested_label"]:
            task["predictions"] = [{
                "model_version": model_version,
                "score": r["label_error_score"],
                "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                            "value": {"choices": [r["suggested_label"]]}}],
            }]
        tasks.append(task)
    return tasks


def _config(class_names: list[str]) -> str:
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in class_names)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        '  <Header value="Given label: $given_label · suggested: $suggested_label · score $label_error_score"/>\n'
        '  <Text name="why" value="$review"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single-radio" showInline="true" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def _readme(res: ExportResult, image_url: str) -> str:
    return f"""Lens relabelling export of run {res.run_id!r}
{res.candidates} candidate label errors (ranked by label_error_score; {res.confirmed} confirmed by a reviewer),
{res.neighbours} training images with the same given label as a confirmed error, {res.images} image files.
{res.detection or ''}

Spreadsheet: fill `corrected_label` (a class name; the suggested label is the model's prediction),
`annotator` and optionally `note` in candidates.csv. Leave `corrected_label` empty to skip a row.

Label Studio: create a project with label_studio_config.xml as its labelling interface and import
label_studio_tasks.json. Images are referenced as {image_url}images/<file>: with the default, start
Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set to this folder, and add a local-files storage for it
(or re-export with --image-url http://host/path/ when the images are served elsewhere).
Export the annotations as JSON (or JSON-MIN).

Bring the labels back, then train with them:
  lens labels import candidates.csv            # or the Label Studio export, --who NAME if the file has none
  lens train --labels-from {res.run_id} --run {res.run_id}-relabelled --data <the same dataset>
  lens compare {res.run_id} {res.run_id}-relabelled
"""


def _write(folder: Path, rows, res: ExportResult, extra: dict, image_url: str) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name, png in extra["pngs"].items():
        (folder / "images" / name).write_bytes(png)
    (folder / "candidates.csv").write_bytes(_csv_bytes(rows))
    version = f"lens {res.run_id}"
    (folder / "label_studio_tasks.json").write_text(
        json.dumps(_tasks(rows, image_url, version), indent=1, ensure_ascii=False), encoding="utf-8")
    (folder / "label_studio_config.xml").write_text(_config(extra["class_names"]), encoding="utf-8")
    (folder / "README.txt").write_text(_readme(res, image_url), encoding="utf-8")


def export(warehouse: Warehouse, *, out_dir: str | os.PathLike, run_id: str | None = None, top: int = DEFAULT_TOP,
           neighbours: int = DEFAULT_NEIGHBOURS, image_url: str = DEFAULT_IMAGE_URL, force: bool = False) -> ExportResult:
    """Write the export to ``out_dir`` (see the module docstring).

    The folder is built beside ``out_dir`` and renamed into place at the end, so a failed
    export leaves nothing half written. An existing, non-empty ``out_dir`` is refused unless
    ``force`` (then replaced).
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise LensError(f"{out} exists and is not empty: pick another --out, or pass --force to replace it")
    rows, res, extra = collect(warehouse, run_id=run_id, top=top, neighbours=neighbours)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write(tmp, rows, res, extra, image_url)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    res.out_dir = out
    return res


def export_zip(warehouse: Warehouse, *, run_id: str | None = None, top: int = DEFAULT_TOP,
               neighbours: int = DEFAULT_NEIGHBOURS, image_url: str = DEFAULT_IMAGE_URL) -> tuple[bytes, ExportResult]:
    """The export as one zip file (the dashboard's download): the same files, under ``relabel-<run>/``."""
    rows, res, extra = collect(warehouse, run_id=run_id, top=top, neighbours=neighbours)
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp), rows, res, extra, image_url)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    z.write(path, f"relabel-{res.run_id}/{path.relative_to(tmp)}")
    return buf.getvalue(), res


# -- import -------------------------------------------------------------------------------------


@dataclass
class _Row:
    where: str                      # "line 4" / "task 3 (id 17)"
    run_id: str | None
    split: str | None
    example_id: Any
    label: str | None               # the annotator's class name
    given: str | None
    who: str | None
    annotated_at: datetime | None
    note: str | None


def _time(v) -> datetime | None:
    if not v or not isinstance(v, str):
        return None
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc).replace(tzinfo=None)
    return t


def _str(v) -> str | None:
    if v is None:
        return None
    v = str(v).strip()
    return v or None


def _read_csv(path: Path, data: bytes) -> list[_Row]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text))
    cols = set(reader.fieldnames or [])
    label_col = next((c for c in NEW_LABEL_COLUMNS if c in cols), None)
    if "example_id" not in cols or label_col is None:
        raise DataError(f"{path}: a CSV of corrections needs the columns example_id and corrected_label "
                        f"(found: {', '.join(sorted(cols)) or 'none'})")
    who_col = next((c for c in WHO_COLUMNS if c in cols), None)
    rows = []
    for i, rec in enumerate(reader, start=2):
        def cell(name):
            v = rec.get(name) if name else None
            return _str(csv_unsafe(v)) if isinstance(v, str) else None

        rows.append(_Row(f"line {i}", cell("run_id"), cell("split"), cell("example_id"), cell(label_col),
                         cell("given_label"), cell(who_col), _time(cell("annotated_at")), cell("note")))
    return rows


def _choice(result: list) -> str | None:
    for item in result or []:
        if isinstance(item, dict) and item.get("type") == "choices":
            choices = (item.get("value") or {}).get("choices") or []
            if choices:
                return _str(choices[0])
    return None


def _who(v) -> str | None:
    if isinstance(v, dict):
        return _str(v.get("email")) or (f"label-studio user {v['id']}" if v.get("id") is not None else None)
    if isinstance(v, (int, str)) and str(v).strip():
        return _str(v) if isinstance(v, str) and not str(v).isdigit() else f"label-studio user {v}"
    return None


def _read_label_studio(path: Path, data: bytes) -> list[_Row]:
    try:
        tasks = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a Label Studio JSON export ({exc})") from exc
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise DataError(f"{path}: a Label Studio export is a JSON list of tasks")
    rows = []
    for i, t in enumerate(tasks, start=1):
        where = f"task {i}" + (f" (id {t['id']})" if t.get("id") is not None else "")
        if "data" in t or "annotations" in t:  # the JSON export
            d = t.get("data") or {}
            done = [a for a in (t.get("annotations") or [])
                    if isinstance(a, dict) and not a.get("was_cancelled") and _choice(a.get("result"))]
            done.sort(key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), str(a.get("id"))))
            last = done[-1] if done else None
            label = _choice(last.get("result")) if last else None
            who = _who(last.get("completed_by")) if last else None
            when = _time(last.get("updated_at") or last.get("created_at")) if last else None
        else:  # JSON-MIN: the data fields and the choice (under its from_name) on one level
            d = t
            v = t.get(FROM_NAME)
            if isinstance(v, dict):
                v = v.get("choices")
            if isinstance(v, list):
                v = v[0] if v else None
            label = _str(v) if isinstance(v, (str, int)) else None
            who = _who(t.get("annotator"))
            when = _time(t.get("updated_at") or t.get("created_at"))
        rows.append(_Row(where, _str(d.get("run_id")), _str(d.get("split")), d.get("example_id"), label,
                         _str(d.get("given_label")), who, when, _str(d.get("note"))))
    return rows


def _example_id(v) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if _INT64[0] <= v <= _INT64[1] else None
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        n = int(v.strip())
        return n if _INT64[0] <= n <= _INT64[1] else None
    return None


def _train_labels(con, run_id: str, dataset: str | None, ids: list[int]) -> tuple[dict[int, int], str | None]:
    """Label of each training example id: from the run's features, else its dataset."""
    found = dict(con.execute(
        "select example_id, label from features where run_id = ? and split = 'train' and list_contains(?, example_id)",
        [run_id, ids],
    ).fetchall())
    missing = [i for i in ids if i not in found]
    if not missing:
        return {int(k): int(v) for k, v in found.items()}, None
    try:
        from lens.datasets import open_source

        if not dataset:
            raise LensError("the run names no dataset")
        idx, labels = open_source(dataset).labels("train")
        lookup = dict(zip(np.asarray(idx).tolist(), np.asarray(labels).tolist()))
        found.update({i: lookup[i] for i in missing if i in lookup})
        return {int(k): int(v) for k, v in found.items()}, None
    except LensError as exc:
        return {int(k): int(v) for k, v in found.items()}, str(exc)


def import_labels(warehouse: Warehouse, path: str | os.PathLike, *, run_id: str | None = None,
                  who: str | None = None) -> ImportResult:
    """Append the corrections of a CSV or Label Studio export (see the module docstring)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if path.suffix.lower() == ".json" or head in (b"[", b"{"):
        rows, fmt = _read_label_studio(path, data), "label-studio"
    else:
        rows, fmt = _read_csv(path, data), "csv"
    digest = hashlib.sha256(data).hexdigest()

    runs = {r.run_id for r in rows if r.run_id} | ({run_id} if run_id else set())
    if len(runs) > 1:
        raise DataError(f"{path}: rows of several runs ({', '.join(sorted(runs))}); import one run's file at a time")
    labelled = [r for r in rows if r.label]
    blank = len(rows) - len(labelled)
    problems: list[tuple[int, str]] = []  # (row position, message): reported in file order
    order = {id(r): i for i, r in enumerate(rows)}
    if not runs:
        raise DataError(f"{path}: the file names no run_id: say which run it is for with --run")
    with warehouse.connect() as con:
        run = require_run(con, runs.pop())
        dataset, eval_split = con.execute("select dataset, eval_split from runs where run_id = ?", [run]).fetchone()
        eval_split = eval_split or "eval"
        names = class_names(con, run)
        by_lower: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            by_lower.setdefault(n.lower(), []).append(i)
        parsed = []
        for r in labelled:
            split = r.split or eval_split
            ex = _example_id(r.example_id)
            err = []
            if split not in ("train", eval_split):
                err.append(f"split {split!r} is neither 'train' nor the run's evaluation split {eval_split!r}")
            if ex is None:
                err.append(f"example_id {r.example_id!r} is not a 64-bit integer")
            new = names.index(r.label) if r.label in names else (
                by_lower[r.label.lower()][0] if len(by_lower.get(r.label.lower(), [])) == 1 else None)
            if new is None:
                err.append(f"unknown class {r.label!r}")
            person = r.who or who
            if not person:
                err.append("no annotator (fill the annotator column, or pass --who NAME)")
            if err:
                problems.append((order[id(r)], f"{r.where}: {', '.join(err)}"))
                continue
            parsed.append((r, split, ex, new, person))
        eval_ids = [ex for _, s, ex, _, _ in parsed if s == eval_split]
        old_eval = dict(con.execute(
            "select example_id, label from predictions where run_id = ? and list_contains(?, example_id)",
            [run, eval_ids],
        ).fetchall()) if eval_ids else {}
        train_ids = sorted({ex for _, s, ex, _, _ in parsed if s == "train"})
        old_train, train_why = _train_labels(con, run, dataset, train_ids) if train_ids else ({}, None)
        seen: dict[tuple[str, int], tuple[int, str]] = {}
        records = []
        for r, split, ex, new, person in parsed:
            old = (old_eval if split == eval_split else old_train).get(ex)
            if old is None:
                what = (f"no evaluation example {ex} in run {run!r}" if split == eval_split else
                        f"no training example {ex} in the features or dataset of run {run!r}"
                        + (f" ({train_why})" if train_why else ""))
                problems.append((order[id(r)], f"{r.where}: {what}"))
                continue
            if r.given and r.given != names[old] and r.given.lower() != names[old].lower():
                problems.append((order[id(r)], f"{r.where}: given label {r.given!r}, but run {run!r} has "
                                 f"{names[old]!r} for {split} example {ex} (a file for another run or dataset?)"))
                continue
            key = (split, ex)
            if key in seen and seen[key][0] != new:
                problems.append((order[id(r)], f"{r.where}: {split} example {ex} is labelled {names[new]!r} here "
                                 f"and {names[seen[key][0]]!r} at {seen[key][1]}"))
                continue
            seen[key] = (new, r.where)
            stamp = r.annotated_at.isoformat() if r.annotated_at else digest
            records.append({
                "correction_id": stable_id(run, split, ex, new, person, stamp), "run_id": run, "dataset": dataset,
                "split": split, "example_id": ex, "old_label": old, "new_label": new, "old_name": names[old],
                "new_name": names[new], "who": person, "annotated_at": r.annotated_at, "source_file": str(path),
                "source_format": fmt, "note": r.note,
            })
    if problems:
        problems = [m for _, m in sorted(problems)]
        shown = "; ".join(problems[:_SHOW]) + (f"; and {len(problems) - _SHOW} more" if len(problems) > _SHOW else "")
        raise DataError(f"{path}: {len(problems)} row(s) refused, nothing written: {shown}")
    if not records:
        raise DataError(f"{path}: no labelled rows ({len(rows)} rows, none with a corrected label); nothing written")

    now = utcnow()
    with warehouse.transaction() as con:
        stored = {r[0] for r in con.execute(
            "select correction_id from label_corrections where list_contains(?, correction_id)",
            [[r["correction_id"] for r in records]],
        ).fetchall()}
        new_records = list({r["correction_id"]: r for r in records if r["correction_id"] not in stored}.values())
        if new_records:
            insert_arrow(con, "label_corrections", pa.Table.from_pylist(
                [{**r, "imported_at": now} for r in new_records], schema=_schema()))
    by_split: dict[str, int] = {}
    for r in new_records:
        by_split[r["split"]] = by_split.get(r["split"], 0) + 1
    return ImportResult(run, len(rows), len(new_records), len(records) - len(new_records), blank,
                        sum(1 for r in new_records if r["old_label"] != r["new_label"]), by_split)


def _schema() -> pa.Schema:
    return pa.schema([
        ("correction_id", pa.string()), ("run_id", pa.string()), ("dataset", pa.string()), ("split", pa.string()),
        ("example_id", pa.int64()), ("old_label", pa.int32()), ("new_label", pa.int32()), ("old_name", pa.string()),
        ("new_name", pa.string()), ("who", pa.string()), ("annotated_at", pa.timestamp("us")),
        ("imported_at", pa.timestamp("us")), ("source_file", pa.string()), ("source_format", pa.string()),
        ("note", pa.string()),
    ])
