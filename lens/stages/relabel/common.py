"""What the relabelling loop's modules share: defaults, the export's columns and file names,
the Label Studio control names, and the result records of an export and of an import."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
