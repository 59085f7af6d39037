"""lens.augment: batched augmentations with per-image randomness, checked against
torchvision's functional ops applied image by image."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from lens import augment


def _images(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 16, 16, generator=g)
    x[0] = 0.5  # gray: hue undefined, saturation 0
    x[1, :, :4] = 1.0  # white rows
    x[2, 0], x[2, 1], x[2, 2] = 1.0, 0.0, 0.0  # pure red
    return x


@pytest.mark.parametrize("ours, theirs, lo, hi", [
    (augment.adjust_brightness, TF.adjust_brightness, 0.6, 1.4),
    (augment.adjust_contrast, TF.adjust_contrast, 0.6, 1.4),
    (augment.adjust_saturation, TF.adjust_saturation, 0.0, 1.6),
    (augment.adjust_hue, TF.adjust_hue, -0.5, 0.5),
])
def test_batched_colour_ops_match_torchvision_per_image(ours, theirs, lo, hi):
    x = _images()
    factors = lo + (hi - lo) * torch.rand(len(x), generator=torch.Generator().manual_seed(1))
    out = ours(x.clone(), factors)
    expected = torch.stack([theirs(x[i], float(factors[i])) for i in range(len(x))])
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_full_size_crop_is_the_identity_and_crops_differ_per_image():
    x = _images()
    same = augment.resized_crop(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    one = x[3:4].expand(32, -1, -1, -1)
    out = augment.resized_crop(one, 16, scale=(0.3, 0.6), generator=torch.Generator().manual_seed(0))
    assert out.shape == (32, 3, 16, 16)
    distinct = {tuple(o.flatten()[:40].tolist()) for o in out}
    assert len(distinct) == 32  # every image its own box


def test_erasing_boxes_are_per_image_within_the_area_range():
    n, side = 400, 32
    apply, top, left, h, w = augment.erasing_boxes(n, side, side, p=0.5, scale=(0.02, 0.2),
                                                   generator=torch.Generator().manual_seed(0))
    assert 150 < int(apply.sum()) < 250
    area = (h * w).double() / side**2
    assert area.min() >= 0.005 and area.max() <= 0.3  # rounding to whole pixels around 2-20 %
    assert (top + h <= side).all() and (left + w <= side).all() and (top >= 0).all() and (left >= 0).all()
    x = torch.ones(n, 3, side, side)
    out = augment.random_erasing(x, p=0.5, scale=(0.02, 0.2), generator=torch.Generator().manual_seed(0))
    erased = (out == 0).all(dim=1).sum(dim=(1, 2))
    expected = torch.where(apply, h * w, torch.zeros_like(h))
    assert torch.equal(erased, expected)  # exactly the drawn box, on exactly the drawn images


def test_build_is_seeded_per_image_and_keeps_uint8():
    specs = [augment.AugmentSpec(kind, dict(params), "test") for kind, _, params in augment.RULES]
    batch = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8).expand(16, -1, -1, -1).contiguous()
    run = lambda seed: augment.build(specs, 16, generator=torch.Generator().manual_seed(seed))(batch)  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    assert a.dtype == torch.uint8 and a.shape == batch.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the same image sixteen times comes out sixteen different ways (a v2 transform on the
    # batch tensor would have given all of them one set of parameters)
    assert len({bytes(img.numpy().tobytes()) for img in a}) == 16


def test_build_with_nothing_or_an_unknown_kind():
    assert augment.build([], 32) is None
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.build([augment.AugmentSpec("rotate", {}, "")], 32)


def test_transform_costs_little_next_to_a_training_step():
    """Sanity bound (not the benchmark): all four augmentations on a batch of 128 32x32 images
    take far less than a ResNet-18 step on it (~0.4 s on 2 cores); benchmarks/bench_train.py
    measures the real ratio."""
    import time

    specs = [augment.AugmentSpec(kind, dict(params), "test") for kind, _, params in augment.RULES]
    transform = augment.build(specs, 32, generator=torch.Generator().manual_seed(0))
    batch = torch.randint(0, 256, (128, 3, 32, 32), dtype=torch.uint8)
    transform(batch)
    t0 = time.perf_counter()
    for _ in range(3):
        transform(batch)
    assert (time.perf_counter() - t0) / 3 < 0.2


def test_the_clusters_name_decides_before_its_answer():
    cluster = {"cluster_id": 2, "name": "random crops, surroundings that drive",
               "text": "Random erasing and random crops, so the model relies on the object"}
    specs, _ = augment.plan([cluster])
    assert [s.kind for s in specs] == ["random_resized_crop"] and "'crop'" in specs[0].reason


def test_experiment_arms_one_per_recommendation_with_data_changes():
    clusters = [
        {"cluster_id": 0, "name": "colour", "text": "Colour jitter so the background stops deciding", "rank": 1},
        {"cluster_id": 1, "name": "hard examples", "text": "More [CLASS] training images like this one",
         "classes": [3, 5], "rank": 2},
        {"cluster_id": 2, "name": "relabel", "text": "Relabel the doubtful examples", "classes": [1], "rank": 3},
        {"cluster_id": 3, "name": "colour again", "text": "More colour jitter", "rank": 4},
    ]
    arms, skipped = augment.plan_arms(clusters, top=3)
    assert [(a.arm, a.cluster["cluster_id"]) for a in arms] == [("colour_jitter", 0), ("oversample_3_5", 1)]
    assert arms[1].params["classes"] == [3, 5] and arms[1].augment_spec() is None
    assert arms[0].augment_spec().kind == "colour_jitter"
    assert len(skipped) == 1 and "cluster 2" in skipped[0] and "relabel" in skipped[0].lower()


def test_oversample_keeps_the_budget_and_adds_the_classes():
    import numpy as np

    labels = np.repeat(np.arange(4), 25)  # 100 examples, 25 per class
    idx = augment.oversample_index(labels, [1], share=0.5, seed=0)
    assert len(idx) == len(labels) and idx.dtype == np.int64
    counts = np.bincount(labels[idx], minlength=4)
    assert counts[1] == 25 + 12 and counts.sum() == 100
    assert np.array_equal(idx, augment.oversample_index(labels, [1], share=0.5, seed=0))  # seeded
    assert (idx[labels == 1] == np.flatnonzero(labels == 1)).all()  # the class's own examples all stay
