"""The export's files: ``candidates.csv``, the Label Studio tasks and labelling interface, the
images and a README, written to a folder (:func:`export`) or packed as one zip (:func:`export_zip`).
The rows come from :func:`.candidates.collect`."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from lens.corrections import csv_safe
from lens.errors import LensError
from lens.warehouse import Warehouse

from .candidates import collect
from .common import COLUMNS, DEFAULT_IMAGE_URL, DEFAULT_NEIGHBOURS, DEFAULT_TOP, FROM_NAME, TO_NAME, ExportResult


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
    """Write the export to ``out_dir`` (see the package docstring).

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
