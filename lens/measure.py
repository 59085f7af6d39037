"""Measured facts: plain functions over arrays (image facts, model signals, typicality).

Everything here is numpy only and works on whole batches. Images are ``uint8`` arrays
of shape (N, H, W, 3) (RGB); probabilities are float arrays of shape (N, C).

Regions
-------
The **border** is the outer ring of width ``max(1, round(side * BORDER_FRACTION))`` pixels
(4 px on 32x32, 43.75% of the area): the background proxy. The **centre** is the central
box of half the side (16x16 on 32x32, 25% of the area): the foreground proxy. Neither
is a segmentation: they are fixed regions, and every text that uses them says "border"
or "centre" (or "background (border)").

Colour terms
------------
Every pixel is named with one of the eleven basic colour terms (:data:`COLOUR_TERMS`)
by fixed rules on HSV (see :func:`colour_names`); a region's colour is the share of its
pixels per term, and its *dominant* colour is the most frequent term.

Thresholds
----------
The image-fact thresholds used by the evidence stage, the ``measured`` backend and the
grounding check are the named constants below, in this one place:

==============================  =======  ==================================================
constant                        value    meaning
==============================  =======  ==================================================
DARK_BRIGHTNESS                 0.25     mean luma below this: "dark"
BRIGHT_BRIGHTNESS               0.80     mean luma above this: "bright / washed out"
LOW_CONTRAST                    0.08     std of luma below this: "low contrast"
FG_BG_SIMILAR                   12.0     centre-border CIELAB ΔE below this: object and
                                         background have similar colours
UNUSUAL_Z                       2.0      |z| at or above this vs the true class's training
                                         images: the fact is unusual for that class
TYPICAL_Z                       1.0      |z| below this: the fact is typical of the class
TORN_GAP                        0.20     p(pred) - p(true) below this: the model is torn
                                         between the pair
CONFIDENT_OTHER                 0.90     p(pred) at or above this: the model is confident
                                         in another class
COLOUR_TYPICAL_RATIO            2.0      background colour share in the predicted class's
                                         training images at least this many times that of
                                         the true class (and >= COLOUR_TYPICAL_SHARE):
                                         the background colour points to the predicted class
COLOUR_TYPICAL_SHARE            0.15
OFF_CENTRE_SALIENCY             0.25     saliency share in the centre below this (the
                                         centre's share of the area): saliency lies mostly
                                         outside the centre
COLOUR_CONSISTENT_SHARE         0.25     a claimed colour covering at least this share of
                                         the region: consistent
COLOUR_CONTRADICTED_SHARE       0.05     ... less than this share: contradicted
LOOKS_LIKE_SHARE                0.30     "looks like a <class>" is consistent when at least
                                         this share of the nearest training images carry it
==============================  =======  ==================================================

The diagnosis scores and tags (``label_error_score``, ``ambiguity_score``) are in
:mod:`lens.diagnosis`, with their own thresholds.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

# -- thresholds (see the module docstring table) ----------------------------------------------

BORDER_FRACTION = 0.125
DARK_BRIGHTNESS = 0.25
BRIGHT_BRIGHTNESS = 0.80
LOW_CONTRAST = 0.08
FG_BG_SIMILAR = 12.0
UNUSUAL_Z = 2.0
TYPICAL_Z = 1.0
TORN_GAP = 0.20
CONFIDENT_OTHER = 0.90
COLOUR_TYPICAL_RATIO = 2.0
COLOUR_TYPICAL_SHARE = 0.15
OFF_CENTRE_SALIENCY = 0.25
COLOUR_CONSISTENT_SHARE = 0.25
COLOUR_CONTRADICTED_SHARE = 0.05
LOOKS_LIKE_SHARE = 0.30

COLOUR_TERMS = ("black", "white", "grey", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")

#: numeric image facts that get z-scores against class training images
NUMERIC_FACTS = ("brightness", "contrast", "saturation", "sharpness", "fg_bg_distance", "edge_share")
#: z-scores of sharpness are taken on log(sharpness + SHARPNESS_EPS) (it is heavy-tailed)
SHARPNESS_EPS = 1e-4
#: added to the luma variance in the sharpness denominator (flat images do not explode)
SHARPNESS_FLOOR = 1e-3


# -- regions --------------------------------------------------------------------------------


def region_masks(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the border ring and the centre box.

    Returns
    -------
    border, centre : ndarray of bool, shape (H, W)
    """
    bh = max(1, int(round(height * BORDER_FRACTION)))
    bw = max(1, int(round(width * BORDER_FRACTION)))
    border = np.ones((height, width), dtype=bool)
    border[bh : height - bh, bw : width - bw] = False
    centre = np.zeros((height, width), dtype=bool)
    centre[height // 4 : height - height // 4, width // 4 : width - width // 4] = True
    return border, centre


# -- colour ---------------------------------------------------------------------------------


def luma(images: np.ndarray) -> np.ndarray:
    """Rec. 601 luma in [0, 1].

    Parameters
    ----------
    images : ndarray of uint8, shape (N, H, W, 3)

    Returns
    -------
    ndarray of float32, shape (N, H, W)
    """
    x = images.astype(np.float32) / 255.0
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def rgb_to_hsv(images: np.ndarray) -> np.ndarray:
    """HSV with hue in degrees [0, 360) and saturation, value in [0, 1].

    Parameters
    ----------
    images : ndarray of uint8, shape (..., 3)

    Returns
    -------
    ndarray of float32, shape (..., 3)
    """
    x = images.astype(np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx = x.max(axis=-1)
    mn = x.min(axis=-1)
    d = mx - mn
    safe = np.where(d > 0, d, 1.0)
    h = np.where(mx == r, ((g - b) / safe) % 6.0, np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    h = np.where(d > 0, h * 60.0, 0.0)
    s = np.where(mx > 0, d / np.where(mx > 0, mx, 1.0), 0.0)
    return np.stack([h, s, mx], axis=-1).astype(np.float32)


def colour_names(images: np.ndarray) -> np.ndarray:
    """Name every pixel with a basic colour term (an index into :data:`COLOUR_TERMS`).

    Rules on HSV (hue in degrees): value < 0.18 black; saturation < 0.18: white when
    value > 0.80, else grey; hue 10-45 with value < 0.60 brown; then by hue: red
    (< 10 or >= 340; pink when saturation < 0.5 and value > 0.7), orange (10-40),
    yellow (40-70), green (70-165), blue (165-255), purple (255-290), pink (290-340).

    Parameters
    ----------
    images : ndarray of uint8, shape (..., 3)

    Returns
    -------
    ndarray of int8, shape (...)
    """
    hsv = rgb_to_hsv(images)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    t = {name: i for i, name in enumerate(COLOUR_TERMS)}
    out = np.full(h.shape, t["blue"], dtype=np.int8)
    out[(h >= 255) & (h < 290)] = t["purple"]
    out[(h >= 290) & (h < 340)] = t["pink"]
    out[(h >= 165) & (h < 255)] = t["blue"]
    out[(h >= 70) & (h < 165)] = t["green"]
    out[(h >= 40) & (h < 70)] = t["yellow"]
    out[(h >= 10) & (h < 40)] = t["orange"]
    red = (h < 10) | (h >= 340)
    out[red] = t["red"]
    out[red & (s < 0.5) & (v > 0.7)] = t["pink"]
    out[(h >= 10) & (h < 45) & (v < 0.60)] = t["brown"]
    low_sat = s < 0.18
    out[low_sat] = t["grey"]
    out[low_sat & (v > 0.80)] = t["white"]
    out[v < 0.18] = t["black"]
    return out


def colour_shares(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Share of each colour term among the pixels of a region.

    Parameters
    ----------
    images : ndarray of uint8, shape (N, H, W, 3)
    mask : ndarray of bool, shape (H, W)

    Returns
    -------
    ndarray of float32, shape (N, len(COLOUR_TERMS)); rows sum to 1
    """
    names = colour_names(images[:, mask])  # (N, P)
    k = len(COLOUR_TERMS)
    counts = np.zeros((len(images), k), dtype=np.float32)
    for i in range(k):
        counts[:, i] = (names == i).sum(axis=1)
    return counts / max(int(mask.sum()), 1)


def shares_dict(shares: np.ndarray, *, min_share: float = 0.01) -> dict[str, float]:
    """One row of :func:`colour_shares` as {term: share}, largest first, tiny shares dropped."""
    order = np.argsort(-shares, kind="stable")
    return {COLOUR_TERMS[i]: round(float(shares[i]), 3) for i in order if shares[i] >= min_share}


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB colours.

    Parameters
    ----------
    rgb : ndarray, shape (..., 3), values in [0, 1]

    Returns
    -------
    ndarray of float64, shape (..., 3): L in [0, 100], a, b
    """
    c = np.asarray(rgb, dtype=np.float64)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


# -- image facts ----------------------------------------------------------------------------


def image_facts(images: np.ndarray) -> dict[str, np.ndarray]:
    """Measured facts of a batch of same-sized images.

    Parameters
    ----------
    images : ndarray of uint8, shape (N, H, W, 3)

    Returns
    -------
    dict of str to ndarray
        ``brightness`` (N,) mean luma in [0, 1]; ``contrast`` (N,) std of luma;
        ``saturation`` (N,) mean HSV saturation; ``sharpness`` (N,) variance of the
        4-neighbour Laplacian of luma divided by (variance of luma + SHARPNESS_FLOOR), so
        it measures fine detail independently of brightness and contrast; ``fg_bg_distance`` (N,) CIELAB ΔE (CIE76) between
        the mean colours of centre and border; ``edge_share`` (N,) share of the luma
        gradient magnitude that lies in the border ring (structure reaching the frame);
        ``border_shares`` / ``centre_shares`` (N, 11) colour-term shares;
        ``border_colour`` / ``centre_colour`` (N,) dominant term (object array of str).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got shape {images.shape}")
    n, h, w, _ = images.shape
    y = luma(images)
    hsv_s = rgb_to_hsv(images)[..., 1]
    if h >= 3 and w >= 3:
        lap = 4 * y[:, 1:-1, 1:-1] - y[:, :-2, 1:-1] - y[:, 2:, 1:-1] - y[:, 1:-1, :-2] - y[:, 1:-1, 2:]
        # scale-free: Laplacian energy relative to the luma variance (darkening or a contrast
        # change alone leaves it as it is; blur and upscaling lower it)
        sharp = lap.reshape(n, -1).var(axis=1) / (y.reshape(n, -1).var(axis=1) + SHARPNESS_FLOOR)
    else:
        sharp = np.zeros(n, np.float32)
    gy = np.zeros_like(y)
    gx = np.zeros_like(y)
    gy[:, 1:, :] = np.abs(np.diff(y, axis=1))
    gx[:, :, 1:] = np.abs(np.diff(y, axis=2))
    grad = gx + gy
    border, centre = region_masks(h, w)
    total = grad.reshape(n, -1).sum(axis=1)
    edge_share = np.where(total > 0, grad[:, border].sum(axis=1) / np.where(total > 0, total, 1.0), border.mean())
    x = images.astype(np.float32) / 255.0
    lab_border = rgb_to_lab(x[:, border].mean(axis=1))
    lab_centre = rgb_to_lab(x[:, centre].mean(axis=1))
    b_sh = colour_shares(images, border)
    c_sh = colour_shares(images, centre)
    terms = np.array(COLOUR_TERMS, dtype=object)
    return {
        "brightness": y.reshape(n, -1).mean(axis=1).astype(np.float32),
        "contrast": y.reshape(n, -1).std(axis=1).astype(np.float32),
        "saturation": hsv_s.reshape(n, -1).mean(axis=1).astype(np.float32),
        "sharpness": sharp.astype(np.float32),
        "fg_bg_distance": np.linalg.norm(lab_centre - lab_border, axis=1).astype(np.float32),
        "edge_share": edge_share.astype(np.float32),
        "border_shares": b_sh,
        "centre_shares": c_sh,
        "border_colour": terms[b_sh.argmax(axis=1)],
        "centre_colour": terms[c_sh.argmax(axis=1)],
    }


def _transform(fact: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return np.log(values + SHARPNESS_EPS) if fact == "sharpness" else values


def class_fact_stats(facts: Mapping[str, np.ndarray], labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Per-class mean and std of each numeric fact, and per-class colour-term shares.

    Parameters
    ----------
    facts : dict from :func:`image_facts` over training images (N of them)
    labels : ndarray of int, shape (N,)
    num_classes : int

    Returns
    -------
    dict
        ``n`` (C,) images per class; for each fact in :data:`NUMERIC_FACTS`:
        ``<fact>_mean`` and ``<fact>_std`` (C,) (sharpness on the log scale);
        ``border_colour_share`` / ``centre_colour_share`` (C, 11): share of the class's
        images whose dominant border / centre colour is each term. Classes without
        images get NaN.
    """
    labels = np.asarray(labels)
    out: dict[str, np.ndarray] = {"n": np.bincount(labels, minlength=num_classes).astype(np.int64)}
    for fact in NUMERIC_FACTS:
        v = _transform(fact, facts[fact])
        mean = np.full(num_classes, np.nan)
        std = np.full(num_classes, np.nan)
        for c in range(num_classes):
            sel = v[labels == c]
            if len(sel):
                mean[c] = sel.mean()
                std[c] = sel.std()
        out[f"{fact}_mean"], out[f"{fact}_std"] = mean, std
    term_index = {t: i for i, t in enumerate(COLOUR_TERMS)}
    for region in ("border", "centre"):
        dom = np.array([term_index[t] for t in facts[f"{region}_colour"]], dtype=np.int64)
        share = np.full((num_classes, len(COLOUR_TERMS)), np.nan)
        for c in range(num_classes):
            sel = dom[labels == c]
            if len(sel):
                share[c] = np.bincount(sel, minlength=len(COLOUR_TERMS)) / len(sel)
        out[f"{region}_colour_share"] = share
    return out


def z_scores(fact: str, values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """z = (value - class mean) / class std, per example (sharpness on the log scale).

    Parameters
    ----------
    fact : str, one of :data:`NUMERIC_FACTS`
    values, mean, std : ndarray, shape (N,); ``mean``/``std`` already taken per example
        from the class of interest. A std of 0 (or NaN) gives NaN.

    Returns
    -------
    ndarray of float64, shape (N,)
    """
    v = _transform(fact, values)
    std = np.asarray(std, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(std > 0, (v - np.asarray(mean, dtype=np.float64)) / np.where(std > 0, std, 1.0), np.nan)


# -- model signals ---------------------------------------------------------------------------


def margin(probs: np.ndarray) -> np.ndarray:
    """p(top-1) - p(top-2) per row.

    Parameters
    ----------
    probs : ndarray, shape (N, C), C >= 2

    Returns
    -------
    ndarray of float64, shape (N,)
    """
    p = np.sort(np.asarray(probs, dtype=np.float64), axis=1)
    return p[:, -1] - p[:, -2]


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats per row (0 log 0 = 0), by ``scipy.stats.entropy``.

    Parameters
    ----------
    probs : ndarray, shape (N, C)
        Rows are probability vectors (scipy would rescale a row that does not sum to 1).

    Returns
    -------
    ndarray of float64, shape (N,)
    """
    from scipy.stats import entropy as scipy_entropy

    p = np.asarray(probs, dtype=np.float64)
    if p.shape[0] == 0:
        return np.zeros(0)
    return scipy_entropy(p, axis=1)


def true_rank(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rank of the true class (1 = most probable; ties counted in the true class's favour).

    Parameters
    ----------
    probs : ndarray, shape (N, C)
    labels : ndarray of int, shape (N,)

    Returns
    -------
    ndarray of int64, shape (N,)
    """
    p = np.asarray(probs, dtype=np.float64)
    t = p[np.arange(len(p)), np.asarray(labels)]
    return (p > t[:, None]).sum(axis=1) + 1


# -- interpretation (used by the measured backend and the grounding check) ------------------


def json_dict(v: Any) -> dict:
    """An evidence JSON column (z_true, skipped, colour shares, ...) as a dict, whether it
    arrives decoded or as JSON text; anything unreadable is an empty dict."""
    if v is None:
        return {}
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return {}
    return dict(v) if isinstance(v, Mapping) else {}


#: evidence columns holding JSON text
EVIDENCE_JSON_COLUMNS = ("z_true", "z_pred", "skipped", "border_colours", "centre_colours", "colour_share_true",
                         "colour_share_pred", "diagnosis")


def decode_evidence(row: Mapping[str, Any]) -> dict[str, Any]:
    """An ``evidence`` row with its JSON columns as dicts (null stays None, unreadable JSON -> {}),
    for every reader: the stages, the backends, the dashboard and the report."""
    out = dict(row)
    for col in EVIDENCE_JSON_COLUMNS:
        if out.get(col) is not None:
            out[col] = json_dict(out[col])
    return out


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(f) else f


def hard_image_reasons(evidence: Mapping[str, Any]) -> dict[str, str]:
    """Which "hard image" facts hold, as {fact: short measured statement}.

    ``dark`` (brightness < DARK_BRIGHTNESS or z vs true class <= -UNUSUAL_Z),
    ``low_contrast`` (contrast < LOW_CONTRAST or z <= -UNUSUAL_Z), ``blurred`` (sharpness
    z <= -UNUSUAL_Z), ``similar_colours`` (fg_bg_distance < FG_BG_SIMILAR). ``z_true`` may
    be a dict or missing (then only the absolute thresholds apply).
    """
    z = evidence.get("z_true") or {}
    out: dict[str, str] = {}
    b, zb = _num(evidence.get("brightness")), _num(z.get("brightness"))
    if b is not None and (b < DARK_BRIGHTNESS or (zb is not None and zb <= -UNUSUAL_Z)):
        out["dark"] = f"brightness {b:.2f}" + (f" (z={zb:+.1f})" if zb is not None else "")
    c, zc = _num(evidence.get("contrast")), _num(z.get("contrast"))
    if c is not None and (c < LOW_CONTRAST or (zc is not None and zc <= -UNUSUAL_Z)):
        out["low_contrast"] = f"contrast {c:.3f}" + (f" (z={zc:+.1f})" if zc is not None else "")
    zs = _num(z.get("sharpness"))
    if zs is not None and zs <= -UNUSUAL_Z:
        out["blurred"] = f"sharpness z={zs:+.1f}"
    d = _num(evidence.get("fg_bg_distance"))
    if d is not None and d < FG_BG_SIMILAR:
        out["similar_colours"] = f"centre-border colour distance {d:.1f}"
    return out
