"""Nearest training examples by cosine similarity (scikit-learn), for evidence and exports.

Vectors are L2-normalised once and searched with scikit-learn's brute-force Euclidean
``NearestNeighbors``: on unit vectors the Euclidean order is the cosine order, and
``cos = 1 - d^2 / 2``. (Measured on 10,000 queries x 50,000 training vectors of 512-d on 2
cores: 16.2 s against 14.9 s for the hand-written chunked matmul it replaced, within the
machine's noise; scikit-learn's cosine metric took 19.9 s.)
"""

from __future__ import annotations

import numpy as np


def _unit(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(queries: np.ndarray, train: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` training rows by cosine similarity for each query.

    Parameters
    ----------
    queries : ndarray, shape (Q, D)
    train : ndarray, shape (T, D)
    k : int

    Returns
    -------
    idx : ndarray of int64, shape (Q, min(k, T)), positions in ``train``, most similar first
    sims : ndarray of float32, shape (Q, min(k, T)), cosine similarities
    """
    from sklearn.neighbors import NearestNeighbors

    k = min(int(k), len(train))
    if len(queries) == 0 or k == 0:
        return np.zeros((len(queries), k), np.int64), np.zeros((len(queries), k), np.float32)
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean").fit(_unit(train))
    dist, idx = nn.kneighbors(_unit(queries))
    return idx.astype(np.int64), (1.0 - dist.astype(np.float32) ** 2 / 2.0)
