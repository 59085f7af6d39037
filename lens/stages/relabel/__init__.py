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

The package, by step:

=====================  ======================================================================
:mod:`.common`         defaults, the CSV columns, the file names, the result records
:mod:`.candidates`     :func:`collect`: the export's rows, read from the warehouse
:mod:`.writer`         :func:`export` / :func:`export_zip`: the CSV, Label Studio and README files
:mod:`.readers`        the annotators' CSV and Label Studio files, read into uniform rows
:mod:`.importer`       :func:`import_labels`: the rows checked and appended to ``label_corrections``
=====================  ======================================================================
"""

from __future__ import annotations

from .candidates import collect
from .common import (
    COLUMNS,
    DEFAULT_IMAGE_URL,
    DEFAULT_NEIGHBOURS,
    DEFAULT_TOP,
    FILES,
    FROM_NAME,
    NEW_LABEL_COLUMNS,
    TO_NAME,
    WHO_COLUMNS,
    ExportResult,
    ImportResult,
)
from .importer import import_labels
from .writer import export, export_zip

__all__ = [
    "COLUMNS", "DEFAULT_IMAGE_URL", "DEFAULT_NEIGHBOURS", "DEFAULT_TOP", "FILES", "FROM_NAME", "NEW_LABEL_COLUMNS",
    "TO_NAME", "WHO_COLUMNS", "ExportResult", "ImportResult", "collect", "export", "export_zip", "import_labels",
]
