"""Dataset sources: the Parquet layout, image folders, stratified subsets, cifar10 by name offline."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lens.datasets import ImageFolderSource, TorchvisionCIFAR10, open_source, stratified_subset
from lens.errors import DataError


def test_parquet_source_reads_cifar(cifar_dir):
    src = open_source(cifar_dir)
    assert src.class_names[:3] == ["airplane", "automobile", "bird"] and len(src.class_names) == 10
    assert set(src.splits()) >= {"train", "test"}
    split = src.load("test", limit=200, seed=0)
    labels = pq.read_table(cifar_dir / "test.parquet", columns=["label"]).column("label").to_numpy()
    assert split.images.shape == (200, 32, 32, 3) and split.images.dtype == np.uint8
    np.testing.assert_array_equal(split.labels, labels[split.indices])
    assert np.bincount(split.labels, minlength=10).tolist() == [20] * 10  # stratified
    again = src.load("test", limit=200, seed=0)
    np.testing.assert_array_equal(again.indices, split.indices)


def test_stratified_subset_keeps_shares():
    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    pos = stratified_subset(labels, 10, seed=3)
    assert np.bincount(labels[pos]).tolist() == [7, 2, 1]
    assert len(set(pos)) == 10


def test_image_folder_source(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(d / f"{i}.png")
    src = open_source(tmp_path)
    assert isinstance(src, ImageFolderSource) and src.class_names == ["cat", "dog"]
    s = src.load("test")
    assert s.labels.tolist() == [0, 0, 1, 1] and s.uris[0].endswith("test/cat/0.png")


def test_cifar10_by_name_offline_names_data_option(tmp_path, monkeypatch):
    # no network here (and a refused proxy makes sure of it): the error says how to go offline
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    src = TorchvisionCIFAR10(root=tmp_path)
    with pytest.raises(DataError) as err:
        src.labels("test")
    assert "--data" in str(err.value) and "Cannot download CIFAR-10" in str(err.value)


def test_missing_dataset_and_split(tmp_path, monkeypatch):
    monkeypatch.delenv("LENS_DATA", raising=False)  # CI sets it; here no dataset is given at all
    with pytest.raises(DataError, match="not found"):
        open_source(tmp_path / "nope")
    with pytest.raises(DataError, match="No dataset given"):
        open_source(None)
