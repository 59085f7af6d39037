"""Colour conversions and model signals of lens.measure, against published reference values
and independent implementations (never against a copy of the same formula)."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from lens import measure

# sRGB (8-bit) -> CIELAB (D65, 2 degree observer), as published by Bruce Lindbloom's calculator
# (brucelindbloom.com, "RGB to Lab") and the colormine.org converter; 4 decimals.
LAB_REFERENCE = [
    ((255, 255, 255), (100.0, 0.0, 0.0)),
    ((0, 0, 0), (0.0, 0.0, 0.0)),
    ((255, 0, 0), (53.2408, 80.0925, 67.2032)),
    ((0, 255, 0), (87.7347, -86.1827, 83.1793)),
    ((0, 0, 255), (32.2970, 79.1875, -107.8602)),
    ((255, 255, 0), (97.1393, -21.5537, 94.4780)),
    ((128, 128, 128), (53.5850, 0.0, 0.0)),
]


@pytest.mark.parametrize(("rgb", "lab"), LAB_REFERENCE)
def test_rgb_to_lab_matches_published_reference_values(rgb, lab):
    got = measure.rgb_to_lab(np.array(rgb, dtype=np.float64) / 255.0)
    assert got == pytest.approx(lab, abs=0.01)


def test_rgb_to_lab_of_a_batch_keeps_its_shape():
    rgb = np.array([[c for c, _ in LAB_REFERENCE]], dtype=np.float64) / 255.0  # (1, 7, 3)
    got = measure.rgb_to_lab(rgb)
    assert got.shape == (1, len(LAB_REFERENCE), 3)
    assert got[0] == pytest.approx(np.array([lab for _, lab in LAB_REFERENCE]), abs=0.01)


def test_rgb_to_hsv_matches_the_standard_library():
    rng = np.random.default_rng(0)
    pixels = np.concatenate([rng.integers(0, 256, (2000, 3)),
                             [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 128, 0], [128, 0, 128], [10, 10, 10]]])
    got = measure.rgb_to_hsv(pixels.astype(np.uint8))
    ref = np.array([colorsys.rgb_to_hsv(*(p / 255.0)) for p in pixels])
    ref[:, 0] *= 360.0
    assert got[:, 1:] == pytest.approx(ref[:, 1:], abs=1e-5)
    # hue is circular: 359.99 and 0 are the same colour
    dh = np.abs(got[:, 0] - ref[:, 0])
    assert np.minimum(dh, 360.0 - dh).max() < 1e-3


def test_entropy_in_nats_matches_known_values():
    probs = np.array([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    assert measure.entropy(probs) == pytest.approx([np.log(4), 0.0, np.log(2)])
    assert measure.entropy(np.zeros((0, 3))).shape == (0,)
