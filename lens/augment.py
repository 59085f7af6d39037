"""Iteration 2: turn recommended fix clusters into augmentations that run on whole batches.

``lens train --augment-from RUN`` and ``lens experiment --from RUN`` read RUN's top
recommendations (the ``recommendations`` view), and map each cluster's words to one
augmentation by the rules below (the match earliest in the cluster's name wins, else the
earliest in its typical answer; each kind is used once):

==========================  ============================================================
words in the fix cluster     augmentation (per image, on whole batches; torchvision's
                             semantics, see :func:`build`)
==========================  ============================================================
occlu, erasing, cutout,      random erasing (p=0.5, area 2-20 %, value 0)
hidden, partial, obstruct
crop, framing, scale, zoom,  random resized crop (area 60-100 %, ratio 3/4-4/3)
cut off, viewpoint
colour/color, background,    colour jitter (saturation x[0.6, 1.4], hue +-0.08 turn)
hue, saturation
dark, bright, contrast,      brightness / contrast jitter (x[0.6, 1.4] each)
lighting, exposure, shadow
==========================  ============================================================

Clusters that ask for relabelling or data collection have no augmentation; they are
reported as skipped with the reason. The plan (kinds, parameters, the cluster each came
from and why) is stored in the new run's ``config`` JSON.

Why not ``torchvision.transforms.v2`` on the batch: a v2 transform given a (B, 3, H, W)
tensor draws ONE set of parameters for the whole batch (every image gets the same crop,
the same jitter). Calling it per image keeps per-image randomness but ran the demo's
augmented training at ~480 img/s against ~600 img/s without. :func:`build` draws every
image's parameters at once as (B,) tensors from a seeded ``torch.Generator`` and applies
them with broadcasting (crop: one ``affine_grid`` + ``grid_sample``; erasing: a (B, H, W)
mask), so augmentation costs a few percent of a training step
(``benchmarks/bench_train.py``).
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
#: every augmentation kind, in the order :func:`build` applies them
KINDS = ("random_resized_crop", "brightness_contrast", "colour_jitter", "random_erasing")


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
        label = f"cluster {c.get('cluster_id')} ({c.get('name')!r}, {c.get('size', '?')} failures)"
        hit = _first_rule(c, used)
        if hit is None:
            skipped.append(f"{label}: no augmentation matches its words (relabelling or data collection?)")
            continue
        kind, word, params = hit
        used.add(kind)
        specs.append(AugmentSpec(kind, dict(params), f"{label} mentions {word!r}", dict(c)))
    return specs, skipped


def _first_rule(cluster: dict[str, Any], used: set[str]) -> tuple[str, str, dict[str, Any]] | None:
    """(kind, matched word, params) of the unused rule matching earliest in the cluster's name, else
    earliest in its text ("random crops, ..." is a crop even when its answer says "erasing and crops")."""
    for words in (cluster.get("name") or "", cluster.get("text") or ""):
        hits = [(m.start(), kind, m.group(0), params) for kind, pattern, params in RULES
                if kind not in used and (m := pattern.search(words))]
        if hits:
            _, kind, word, params = min(hits, key=lambda h: h[0])
            return kind, word, params
    return None


def build(specs: Sequence[AugmentSpec], image_size: int, *, generator=None) -> Callable | None:
    """A per-batch transform ``transform(images, labels=None) -> images`` over whole batches.

    ``images`` is a uint8 tensor (B, 3, H, W) on any device; the result is uint8 again (as
    torchvision's transforms give for uint8 input), shape (B, 3, image_size, image_size), on
    the same device; the work in between is float32 in [0, 1].
    Every image draws its own parameters (crop box, jitter factors, erasing box and coin), all
    at once as (B,) tensors from ``generator`` (a ``torch.Generator`` on the CPU; None = torch's
    global generator, which ``lens train`` seeds), so a seed gives the same augmentations on
    any device. The work is a few broadcast tensor operations per batch, never a Python loop
    over images. Order: crop, brightness/contrast, saturation/hue, erasing last (on the final
    geometry). Returns None when there is nothing to do.
    """
    if not specs:
        return None
    by_kind = {s.kind: dict(s.params) for s in specs}
    unknown = set(by_kind) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown augmentation {sorted(unknown)[0]!r}")
    crop = by_kind.get("random_resized_crop")
    light = by_kind.get("brightness_contrast")
    colour = by_kind.get("colour_jitter")
    erase = by_kind.get("random_erasing")

    def transform(batch, labels=None):
        import torch

        if batch.device.type != "cpu" or torch.get_num_threads() == 1:
            return _apply(batch)
        # On the CPU these are small element-wise ops (a 128-image 32x32 batch is 0.4M values per
        # channel op): threads gain nothing, and on a busy machine OpenMP's spinning barriers
        # made them 10-20x slower with 2 threads than with 1 (measured: 140-320 ms vs 24 ms).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _apply(batch)
        finally:
            torch.set_num_threads(threads)

    def _apply(batch):
        import torch

        n = batch.shape[0]
        device = batch.device
        x = batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()

        def uniform(lo: float, hi: float):
            u = torch.rand(n, generator=generator)
            return (lo + (hi - lo) * u).to(device)

        if crop is not None:
            x = resized_crop(x, image_size, scale=tuple(crop["scale"]), generator=generator)
        if light is not None:
            b, c = float(light.get("brightness", 0)), float(light.get("contrast", 0))
            if b:
                x = adjust_brightness(x, uniform(max(0.0, 1 - b), 1 + b))
            if c:
                x = adjust_contrast(x, uniform(max(0.0, 1 - c), 1 + c))
        if colour is not None:
            s, h = float(colour.get("saturation", 0)), float(colour.get("hue", 0))
            if s:
                x = adjust_saturation(x, uniform(max(0.0, 1 - s), 1 + s))
            if h:
                x = adjust_hue(x, uniform(-h, h))
        if erase is not None:
            x = random_erasing(x, p=float(erase["p"]), scale=tuple(erase["scale"]), generator=generator)
        return x.mul_(255.0).round_().to(torch.uint8)

    transform.kinds = tuple(k for k in KINDS if k in by_kind)  # type: ignore[attr-defined]
    return transform


# -- batched, per-sample operations on float images (B, 3, H, W) in [0, 1] ----------------------
# Each takes per-image factors as (B,) tensors and matches torchvision.transforms.v2.functional
# applied image by image with the same factor (tests/test_augment.py checks it).


def _gray(x):
    """ITU-R 601-2 luma (B, 1, H, W), as torchvision's rgb_to_grayscale."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def adjust_brightness(x, factor):
    """``clamp(x * factor)`` per image; ``factor`` (B,)."""
    return (x * factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def adjust_contrast(x, factor):
    """Blend each image with the mean of its grayscale version; ``factor`` (B,)."""
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * mean).clamp_(0.0, 1.0)


def adjust_saturation(x, factor):
    """Blend each image with its grayscale version; ``factor`` (B,) (0 = gray, 1 = unchanged)."""
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * _gray(x)).clamp_(0.0, 1.0)


def adjust_hue(x, shift):
    """Rotate each image's hue by ``shift`` (B,) turns in [-0.5, 0.5] (HSV, as torchvision).

    HSV round trip in closed form: value = max, value x saturation = max - min, and each output
    channel is ``max - (max - min) * clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 * hue) mod 6``, n = 5, 3, 1 for r, g, b: no per-pixel division by the value
    and no sector table (about half the operations of torchvision's per-image version).
    """
    import torch

    r, g, b = x.unbind(dim=1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    chroma = maxc - minc
    inv = 1.0 / torch.where(chroma == 0, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) * inv, (maxc - g) * inv, (maxc - b) * inv
    is_r, is_g = maxc == r, maxc == g
    hue6 = torch.where(is_r, bc - gc, torch.where(is_g, 2.0 + rc - bc, 4.0 + gc - rc))  # 6 x hue, mod 6
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (n + (hue6 + 6.0 * shift.view(-1, 1, 1)).unsqueeze(1)) % 6.0
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc.unsqueeze(1) - chroma.unsqueeze(1) * ramp


def resized_crop(x, size: int, *, scale: tuple[float, float] = (0.6, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), generator=None):
    """A random crop per image (area share in ``scale``, aspect ratio log-uniform in ``ratio``),
    resized to ``size`` x ``size`` bilinearly: one ``affine_grid`` + ``grid_sample`` for the batch.

    A box that would not fit is shrunk to fit (torchvision retries 10 times, then centre-crops).
    """
    import math

    import torch
    from torch.nn import functional as F

    n = x.shape[0]
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=generator)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(n, generator=generator)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)  # width / image width
    h = torch.sqrt(area / r).clamp(max=1.0)
    left = (1.0 - w) * torch.rand(n, generator=generator)
    top = (1.0 - h) * torch.rand(n, generator=generator)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w
    theta[:, 0, 2] = 2.0 * left + w - 1.0
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2.0 * top + h - 1.0
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def erasing_boxes(n: int, height: int, width: int, *, p: float, scale: tuple[float, float],
                  ratio: tuple[float, float] = (0.3, 3.3), generator=None):
    """Per-image erasing boxes, as RandomErasing draws them: (apply, top, left, h, w), each (n,).

    ``apply`` is a coin with probability ``p``; the box covers an area share in ``scale`` with an
    aspect ratio log-uniform in ``ratio``, clipped to the image.
    """
    import math

    import torch

    apply = torch.rand(n, generator=generator) < p
    area = (scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=generator)) * (height * width)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(n, generator=generator)
    r = torch.exp(log_r)
    h = torch.sqrt(area * r).round().clamp(1, height).to(torch.int64)
    w = torch.sqrt(area / r).round().clamp(1, width).to(torch.int64)
    top = (torch.rand(n, generator=generator) * (height - h + 1)).floor().to(torch.int64)
    left = (torch.rand(n, generator=generator) * (width - w + 1)).floor().to(torch.int64)
    return apply, top, left, h, w


def random_erasing(x, *, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.2), value: float = 0.0,
                   generator=None):
    """Erase one random box per image with probability ``p`` (a (B, H, W) mask, no loop)."""
    import torch

    n, _, height, width = x.shape
    apply, top, left, h, w = (t.to(x.device) for t in
                              erasing_boxes(n, height, width, p=p, scale=scale, generator=generator))
    rows = torch.arange(height, device=x.device).view(1, -1)
    cols = torch.arange(width, device=x.device).view(1, -1)
    in_rows = (rows >= top.view(-1, 1)) & (rows < (top + h).view(-1, 1))
    in_cols = (cols >= left.view(-1, 1)) & (cols < (left + w).view(-1, 1))
    mask = in_rows.unsqueeze(2) & in_cols.unsqueeze(1) & apply.view(-1, 1, 1)
    return x.masked_fill(mask.unsqueeze(1), value)


def recommended_fixes(con, run_id: str, *, top: int = 3) -> list[dict[str, Any]]:
    """The ``top`` rows of the ``recommendations`` view for ``run_id``, as dicts for :func:`plan`."""
    rows = con.execute(
        "select rank, cluster_id, name, medoid_text, size, reviewed, purity_lower from recommendations"
        " where run_id = ? order by rank limit ?",
        [run_id, top],
    ).fetchall()
    return [
        {"rank": k, "cluster_id": c, "name": n, "text": m or "", "size": s, "reviewed": r, "purity_lower": p}
        for k, c, n, m, s, r, p in rows
    ]


# -- experiment arms (lens experiment) -------------------------------------------------------

#: words of a fix cluster that ask for more data of some classes (when no augmentation matched)
DATA_RULE = re.compile(
    r"collect|gather|more (?:[\w\[\]/-]+ ){0,3}(?:images|examples|photos|pictures|data|samples)|"
    r"under-?represent|oversampl|rebalanc|class balance", re.I)
#: the share of a data arm's training positions that its classes take over from the others
OVERSAMPLE_SHARE = 0.5


@dataclass
class ArmPlan(AugmentSpec):
    """One arm of an experiment: the change it makes, and the recommendation it tests.

    ``arm`` names it (the augmentation kind, or ``oversample_<class ids>``); ``kind`` is an
    augmentation kind (:data:`KINDS`) or ``'oversample'`` (a data change:
    the training subset with more of the cluster's true classes, same size and order; the
    stand-in Lens can run for "collect more images of X"). The other fields are an
    :class:`AugmentSpec`'s.
    """

    arm: str = ""

    def augment_spec(self) -> AugmentSpec | None:
        return AugmentSpec(self.kind, dict(self.params), self.reason, dict(self.cluster)) if self.kind in KINDS else None


def plan_arms(clusters: Sequence[dict[str, Any]], *, top: int = 3) -> tuple[list[ArmPlan], list[str]]:
    """One arm per recommended fix cluster among the ``top``, best first.

    Each cluster gets the augmentation rule its words match first that no earlier arm uses (as
    :func:`plan`); otherwise, when its words ask for more data (:data:`DATA_RULE`) and it names
    ``classes`` (the true classes of its failures), an ``oversample`` arm for them; otherwise it
    is skipped (relabelling and other changes need people), with the reason.
    """
    arms: list[ArmPlan] = []
    skipped: list[str] = []
    used: set[str] = set()
    for c in list(clusters)[:top]:
        words = f"{c.get('name') or ''} {c.get('text') or ''}"
        label = f"cluster {c.get('cluster_id')} ({c.get('name')!r}, {c.get('size', '?')} failures)"
        chosen = None
        hit = _first_rule(c, used)
        if hit is not None:
            kind, word, params = hit
            chosen = ArmPlan(kind, dict(params), f"{label} mentions {word!r}", dict(c), arm=kind)
        if chosen is None:
            m = DATA_RULE.search(words)
            classes = list(c.get("classes") or [])
            arm = "oversample_" + "_".join(str(k) for k in classes)
            if m and classes and arm not in used:
                chosen = ArmPlan("oversample", {"classes": classes, "share": OVERSAMPLE_SHARE},
                                 f"{label} mentions {m.group(0)!r}", dict(c), arm=arm)
        if chosen is None:
            skipped.append(f"{label}: no automatic change matches its words (relabelling needs people: "
                           f"review it in `lens serve`)")
            continue
        used.add(chosen.arm)
        arms.append(chosen)
    return arms, skipped


def oversample_index(labels, classes: Sequence[int], *, share: float = OVERSAMPLE_SHARE, seed: int = 0):
    """Training positions for an ``oversample`` arm: int64 array (N,) of indices into ``labels`` (N,).

    The same length as the subset (so the same budget and, with the same generator, the same
    order of positions): ``share`` x (number of examples of ``classes``) positions that held
    other classes now hold extra, randomly chosen examples of ``classes`` (seeded).
    """
    import numpy as np

    labels = np.asarray(labels)
    idx = np.arange(len(labels), dtype=np.int64)
    target = np.flatnonzero(np.isin(labels, list(classes)))
    others = np.flatnonzero(~np.isin(labels, list(classes)))
    k = min(int(round(share * len(target))), len(others))
    if k == 0 or len(target) == 0:
        return idx
    rng = np.random.default_rng(seed)
    idx[rng.choice(others, size=k, replace=False)] = rng.choice(target, size=k, replace=True)
    return idx
