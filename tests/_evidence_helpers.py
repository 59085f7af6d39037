"""Helpers for the evidence tests: a planted-pattern dataset, a tiny trained ResNet-18, and
hand-built runs written with lens.predictions (no training stage involved).

Planted task: a neutral grey, slightly noisy 32x32 image with an 8x8 patch in one corner.
Class ``blue`` has a patch tinted towards blue, class ``red`` towards red, by a random
strength ``d``: small ``d`` is hard (the model errs), large ``d`` easy.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from lens.predictions import _list_column, failure_table, prediction_table, store_results, write_run
from lens.warehouse import replace_rows

CLASSES = ["blue", "red"]  # sorted, as an image-folder source names them
PATCH = 8
CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row, col) quadrant: top-left, top-right, bottom-left, bottom-right


def planted_images(n: int, seed: int, *, d_range=(4, 70)):
    """(images uint8 (n, 32, 32, 3), labels (n,), corners (n,) index into CORNERS, strength d (n,))."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    corners = rng.integers(0, 4, n)
    d = rng.uniform(*d_range, n)
    img = np.clip(128 + rng.normal(0, 10, (n, 32, 32, 3)), 0, 255)
    for i in range(n):
        r, c = CORNERS[corners[i]]
        y = 1 + r * (32 - PATCH - 2)
        x = 1 + c * (32 - PATCH - 2)
        sign = 1 if labels[i] == 1 else -1  # red: +R -B; blue: -R +B
        img[i, y : y + PATCH, x : x + PATCH, 0] += sign * d[i]
        img[i, y : y + PATCH, x : x + PATCH, 2] -= sign * d[i]
        img[i, y : y + PATCH, x : x + PATCH, 1] -= 20
    return np.clip(img, 0, 255).astype(np.uint8), labels.astype(np.int64), corners, d


def train_planted(steps: int = 20, batch: int = 16, seed: int = 0, lr: float = 3e-3):
    """A ResNet-18 trained on planted images; returns (model, mean, std)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine one thread trains ~4x faster than two
    try:
        return _train(steps, batch, seed, lr)
    finally:
        torch.set_num_threads(threads)


def _train(steps, batch, seed, lr):
    import torch

    from lens.models import build_resnet18, channel_stats, normalize

    torch.manual_seed(seed)
    images, labels, _, _ = planted_images(steps * batch, seed=seed + 100, d_range=(10, 70))
    mean, std = channel_stats(images[:512])
    model = build_resnet18(2)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for s in range(steps):
        x = normalize(images[s * batch : (s + 1) * batch], mean, std)
        y = torch.from_numpy(labels[s * batch : (s + 1) * batch])
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, mean, std


def predict(model, images, mean, std):
    """(probs (N, C) float32, features (N, 512) float32)."""
    import torch

    from lens.models import normalize, penultimate

    probs, feats = [], []
    with torch.no_grad():
        for s in range(0, len(images), 256):
            x = normalize(images[s : s + 256], mean, std)
            f = penultimate(model, x)
            probs.append(torch.softmax(model.fc(f), 1).numpy())
            feats.append(f.numpy())
    return np.concatenate(probs).astype(np.float32), np.concatenate(feats).astype(np.float32)


def feature_rows(run_id: str, split: str, ids, labels, vectors) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "run_id": pa.array([run_id] * n, pa.string()),
            "split": pa.array([split] * n, pa.string()),
            "example_id": pa.array(np.asarray(ids, np.int64)),
            "label": pa.array(np.asarray(labels, np.int32)),
            "vector": _list_column(np.asarray(vectors, np.float32), pa.float32()),
        }
    )


def write_hand_run(wh, run_id, *, class_names, images, labels, probs=None, pred=None, confidence=None,
                   kind="train", dataset=None, checkpoint=None, train_features=None, eval_features=None):
    """Store a run built by hand: predictions, failures (with images) and optional features."""
    ids = np.arange(len(labels))
    preds = prediction_table(run_id, ids, labels, probs=probs, pred=pred, confidence=confidence)
    fails = failure_table(run_id, preds, lambda pos: images[pos])
    with wh.transaction() as con:
        write_run(con, run_id, kind=kind, class_names=class_names, dataset=dataset, eval_split="test",
                  model="resnet18" if checkpoint else None, checkpoint_path=checkpoint)
        store_results(con, run_id, preds, fails)
        tables = []
        if train_features is not None:
            tables.append(feature_rows(run_id, "train", *train_features))
        if eval_features is not None:
            tables.append(feature_rows(run_id, "eval", ids, labels, eval_features))
        if tables:
            replace_rows(con, "features", {"run_id": run_id}, pa.concat_tables(tables))
    return ids
