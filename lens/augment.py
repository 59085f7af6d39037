"""Iteration 2: turn recommended fix clusters into torchvision augmentations.

``lens train --augment-from RUN`` reads RUN's top recommendations (the ``recommendations``
view: fix clusters ranked by size x reviewed purity), and maps each cluster's words to one
augmentation by the rules below (first match wins per cluster; each kind is used once):

==========================  ============================================================
words in the fix cluster     augmentation (torchvision.transforms.v2)
==========================  ============================================================
occlu, erasing, cutout,      ``RandomErasing(p=0.5, scale=(0.02, 0.2))``
hidden, partial, obstruct
crop, framing, scale, zoom,  ``RandomResizedCrop(size, scale=(0.6, 1.0))``
cut off, viewpoint
colour/color, background,    ``ColorJitter(saturation=0.4, hue=0.08)``
hue, saturation
dark, bright, contrast,      ``ColorJitter(brightness=0.4, contrast=0.4)``
lighting, exposure, shadow
==========================  ============================================================

Clusters that ask for relabelling or data collection have no augmentation; they are
reported as skipped with the reason. The plan (kinds, parameters, the cluster each came
from and why) is stored in the new run's ``config`` JSON.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

RULES: list[tuple[str, re.Pattern, dict[str, Any]]] = [
    ("random_erasing", re.compile(r"occlu|erasing|cutout|hidden|partial|obstruct|block", re.I),
     {"p": 0.5, "scale": (0.02, 0.2)}),
    ("random_resized_crop", re.compile(r"crop|framing|scale|zoom|cut off|cut-off|viewpoint|distance", re.I),
     {"scale": (0.6, 1.0)}),
    ("colour_jitter", re.compile(r"colou?r|background|hue|saturat", re.I),
     {"saturation": 0.4, "hue": 0.08}),
    ("brightness_contrast", re.compile(r"dark|bright|contrast|light|exposure|shadow|dim", re.I),
     {"brightness": 0.4, "contrast": 0.4}),
]


@dataclass
class AugmentSpec:
    kind: str
    params: dict[str, Any]
    reason: str
    cluster: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(clusters: Sequence[dict[str, Any]], *, top: int = 3) -> tuple[list[AugmentSpec], list[str]]:
    """Map the ``top`` recommended fix clusters to augmentations.

    Parameters
    ----------
    clusters : sequence of dict
        Ranked recommendations, best first, each with ``cluster_id``, ``name`` and
        ``text`` (words to match: name, medoid sentence, top terms) and optionally
        ``size``, ``purity_lower``, ``reviewed``.
    top : int
        How many of the ranked clusters to consider.

    Returns
    -------
    specs : list of AugmentSpec, one per augmentation kind chosen
    skipped : list of str, why each considered cluster gave no (new) augmentation
    """
    specs: list[AugmentSpec] = []
    skipped: list[str] = []
    used: set[str] = set()
    for c in list(clusters)[:top]:
        words = f"{c.get('name') or ''} {c.get('text') or ''}"
        label = f"cluster {c.get('cluster_id')} ({c.get('name')!r}, {c.get('size', '?')} failures)"
        for kind, pattern, params in RULES:
            m = pattern.search(words)
            if m and kind not in used:
                used.add(kind)
                specs.append(AugmentSpec(kind, dict(params), f"{label} mentions {m.group(0)!r}", dict(c)))
                break
        else:
            skipped.append(f"{label}: no augmentation matches its words (relabelling or data collection?)")
    return specs, skipped


def build(specs: Sequence[AugmentSpec], image_size: int) -> Callable | None:
    """A per-batch transform for uint8 image tensors (N, 3, H, W) -> uint8 (N, 3, H, W).

    Each image draws its own random parameters. Returns None when there is nothing to do.
    """
    if not specs:
        return None
    import torch
    from torchvision.transforms import v2

    steps = []
    erasing = None
    for s in specs:
        if s.kind == "random_resized_crop":
            steps.append(v2.RandomResizedCrop(image_size, scale=tuple(s.params["scale"]), antialias=True))
        elif s.kind == "colour_jitter":
            steps.append(v2.ColorJitter(saturation=s.params["saturation"], hue=s.params["hue"]))
        elif s.kind == "brightness_contrast":
            steps.append(v2.ColorJitter(brightness=s.params["brightness"], contrast=s.params["contrast"]))
        elif s.kind == "random_erasing":
            erasing = v2.RandomErasing(p=s.params["p"], scale=tuple(s.params["scale"]), value=0)
        else:
            raise ValueError(f"unknown augmentation {s.kind!r}")
    if erasing is not None:
        steps.append(erasing)  # erasing last, on the final geometry
    pipeline = v2.Compose(steps)

    def transform(batch: "torch.Tensor", labels: "torch.Tensor | None" = None) -> "torch.Tensor":
        return torch.stack([pipeline(img) for img in batch])

    return transform


def recommended_fixes(con, run_id: str, *, top: int = 3) -> list[dict[str, Any]]:
    """The ``top`` rows of the ``recommendations`` view for ``run_id``, as dicts for :func:`plan`."""
    rows = con.execute(
        "select cluster_id, name, medoid_text, size, reviewed, purity_lower from recommendations"
        " where run_id = ? order by rank limit ?",
        [run_id, top],
    ).fetchall()
    return [
        {"cluster_id": c, "name": n, "text": m or "", "size": s, "reviewed": r, "purity_lower": p}
        for c, n, m, s, r, p in rows
    ]
