"""Dataset sources: one small interface that yields (index, image, label) and the class names.

Three sources, chosen by :func:`open_source` from what the user typed after ``--data``:

* a folder with ``train.parquet`` / ``test.parquet`` in the Hugging Face image layout
  (columns ``img`` = struct<bytes, path>, ``label``, optional ``index``; class names in the
  Parquet schema metadata key ``class_names`` or given with ``classes=``);
  ``../shared/data/cifar10`` is one;
* an image-folder tree ``ROOT/split/class_name/*.png|jpg``;
* ``cifar10`` by name, through torchvision's downloader (needs internet).

Every problem (missing file, unreadable image, label out of range, empty or missing
split) raises :class:`lens.errors.DataError` naming the file and row, before any stage
writes anything. Images are decoded once into a ``uint8`` array of shape (N, H, W, 3)
by :meth:`DatasetSource.load`.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lens.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ENV_DATA = "LENS_DATA"
# Refuse images whose pixel count suggests a decompression bomb (PIL's own limit is 89M).
MAX_IMAGE_PIXELS = 64_000_000
#: image files larger than this are refused before they are read: an uncompressed RGBA image
#: at MAX_IMAGE_PIXELS is 256 MB, so nothing decodable is bigger (a 3 GB "png" is never read)
MAX_IMAGE_FILE_BYTES = 256 * 2**20


@dataclass
class Example:
    index: int
    image: "PIL.Image.Image"  # noqa: F821 - PIL imported lazily
    label: int


@dataclass
class Split:
    """A decoded split.

    Attributes
    ----------
    name : str
    indices : ndarray of int64, shape (N,)
        Position of each example in the source split (stable ids).
    labels : ndarray of int64, shape (N,)
    images : ndarray of uint8, shape (N, H, W, 3)
    class_names : list of str
    uris : list of str
        Where each image came from (file path or ``source:split:index``).
    """

    name: str
    indices: np.ndarray
    labels: np.ndarray
    images: np.ndarray
    class_names: list[str]
    uris: list[str]

    def __len__(self) -> int:
        return len(self.indices)


def decode_image(data: bytes, *, where: str):
    """Decode image bytes to an RGB PIL image, or raise DataError naming ``where``."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    if not data:
        raise DataError(f"{where}: empty image (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x its limit: treat every bomb as an error
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{where}: image too large, refused as a possible decompression bomb ({exc})") from exc
    except Exception as exc:  # PIL raises many types for bad data
        raise DataError(f"{where}: not a readable image ({type(exc).__name__}: {exc})") from exc


def read_image_file(path: str | os.PathLike, *, where: str):
    """Decode an image file to RGB, or raise DataError naming ``where``.

    The file's size and image header are checked before its bytes are read: files over
    ``MAX_IMAGE_FILE_BYTES`` and files PIL cannot identify from their first bytes are refused
    without reading them whole.
    """
    from PIL import Image

    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_FILE_BYTES:
            raise DataError(
                f"{where}: file is {size / 2**20:,.0f} MiB, over the {MAX_IMAGE_FILE_BYTES / 2**20:,.0f} MiB "
                f"limit for an image (MAX_IMAGE_FILE_BYTES); not read"
            )
        if size == 0:
            raise DataError(f"{where}: empty image (0 bytes)")
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path):  # lazy: reads the header only
                    pass
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"{where}: image too large, refused as a possible decompression bomb ({exc})") from exc
        except OSError as exc:
            if not isinstance(exc, Image.UnidentifiedImageError) and exc.errno is not None:
                raise
            raise DataError(f"{where}: not a readable image ({type(exc).__name__}: {exc})") from exc
        except Exception as exc:  # PIL raises many types for bad data
            raise DataError(f"{where}: not a readable image ({type(exc).__name__}: {exc})") from exc
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{where}: cannot read ({exc})") from exc
    return decode_image(data, where=where)


def to_rgb(im):
    """Convert any PIL mode (L, LA, P, RGBA, I;16, ...) to 8-bit RGB."""
    from PIL import Image

    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def decode_pngs(blobs: Sequence[bytes | None]) -> list[np.ndarray | None]:
    """Stored PNG bytes -> uint8 RGB arrays (H, W, 3); None stays None."""
    from PIL import Image

    out: list[np.ndarray | None] = []
    for b in blobs:
        if b is None:
            out.append(None)
            continue
        with Image.open(io.BytesIO(b)) as im:
            out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return out


def encode_png(image) -> bytes:
    """PNG bytes of a PIL image or a uint8 array (H, W, 3)."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _stack(images: list, *, size: int | None, where: str) -> np.ndarray:
    from PIL import Image

    if not images:
        return np.zeros((0, size or 32, size or 32, 3), dtype=np.uint8)
    sizes = {im.size for im in images}
    if size is None and len(sizes) > 1:
        raise DataError(
            f"{where}: images have different sizes ({sorted(sizes)[:3]}...); pass an image size to resize them"
        )
    if size is not None:
        images = [im if im.size == (size, size) else im.resize((size, size), Image.BILINEAR) for im in images]
    return np.stack([np.asarray(im, dtype=np.uint8) for im in images])


def stratified_subset(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Positions of a stratified subset of ``n`` examples (all when n is None or >= len).

    Each class keeps its share (largest-remainder rounding); positions are returned sorted.
    """
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    if n <= 0:
        raise DataError(f"subset size must be positive, got {n}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts / counts.sum() * n
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take))[: n - take.sum()]:
        take[i] += 1
    chosen = []
    for c, k in zip(classes, take):
        pos = np.flatnonzero(labels == c)
        chosen.append(rng.choice(pos, size=min(k, len(pos)), replace=False))
    return np.sort(np.concatenate(chosen))


class DatasetSource(ABC):
    """A labelled image dataset with named splits."""

    #: how the user named it (stored with the run)
    spec: str
    class_names: list[str]

    @abstractmethod
    def splits(self) -> list[str]:
        """Names of the splits present, e.g. ['train', 'test']."""

    @abstractmethod
    def _records(self, split: str) -> tuple[np.ndarray, np.ndarray, list]:
        """(indices, labels, raw) where raw[i] is bytes or a path; validated labels."""

    @abstractmethod
    def _decode(self, split: str, raw, index: int):
        """Decode one record to an RGB PIL image."""

    def _check_split(self, split: str) -> None:
        if split not in self.splits():
            raise DataError(f"{self.spec}: split {split!r} is missing (found: {', '.join(self.splits()) or 'none'})")

    def __iter__(self) -> Iterator[Example]:  # pragma: no cover - convenience
        yield from self.iter_split("test")

    def iter_split(self, split: str) -> Iterator[Example]:
        """Yield every example of ``split`` as (index, RGB PIL image, label)."""
        indices, labels, raw = self._records(split)
        for i, idx in enumerate(indices):
            yield Example(int(idx), self._decode(split, raw[i], int(idx)), int(labels[i]))

    def labels(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(indices, labels) of a split without decoding images."""
        indices, labels, _ = self._records(split)
        return indices, labels

    def load(
        self,
        split: str,
        *,
        positions: Sequence[int] | np.ndarray | None = None,
        limit: int | None = None,
        seed: int = 0,
        size: int | None = None,
    ) -> Split:
        """Decode a split (or a stratified subset of ``limit``, or given positions) into arrays."""
        indices, labels, raw = self._records(split)
        if positions is None:
            positions = stratified_subset(labels, limit, seed)
        positions = np.asarray(positions, dtype=np.int64)
        images = [self._decode(split, raw[p], int(indices[p])) for p in positions]
        arr = _stack(images, size=size, where=f"{self.spec} [{split}]")
        return Split(
            name=split,
            indices=indices[positions].astype(np.int64),
            labels=labels[positions].astype(np.int64),
            images=arr,
            class_names=list(self.class_names),
            uris=[self.uri(split, raw[p], int(indices[p])) for p in positions],
        )

    def find(self, split: str, example_ids: Sequence[int]) -> np.ndarray:
        """Positions of the given example ids (dataset indices) in ``split``; DataError if absent."""
        indices, _, _ = self._records(split)
        lookup = {int(v): i for i, v in enumerate(indices)}
        missing = [int(e) for e in example_ids if int(e) not in lookup]
        if missing:
            raise DataError(f"{self.spec} [{split}]: no example with index {missing[:5]}")
        return np.array([lookup[int(e)] for e in example_ids], dtype=np.int64)

    def uri(self, split: str, raw, index: int) -> str:
        return f"{self.spec}:{split}:{index}"

    def _validate_labels(self, labels: np.ndarray, where: str) -> None:
        n = len(self.class_names)
        bad = np.flatnonzero((labels < 0) | (labels >= n))
        if len(bad):
            rows = ", ".join(f"row {int(r)} (label {int(labels[r])})" for r in bad[:5])
            raise DataError(f"{where}: labels out of range 0..{n - 1}: {rows}")


class ParquetSource(DatasetSource):
    """``DIR/{split}.parquet`` in the Hugging Face image layout."""

    def __init__(self, root: str | os.PathLike, *, classes: Sequence[str] | None = None):
        self.root = Path(root)
        self.spec = str(root)
        self._cache: dict[str, tuple] = {}
        files = self._files()
        if not files:
            raise DataError(f"{self.root}: no train.parquet / test.parquet found")
        if classes:
            self.class_names = list(classes)
        else:
            self.class_names = self._names_from_metadata(next(iter(files.values())))

    def _files(self) -> dict[str, Path]:
        return {p.stem: p for p in sorted(self.root.glob("*.parquet"))}

    def _names_from_metadata(self, path: Path) -> list[str]:
        import pyarrow.parquet as pq

        try:
            meta = pq.read_schema(path).metadata or {}
        except Exception as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
        raw = meta.get(b"class_names")
        if raw is None and b"huggingface" in meta:
            try:
                feats = json.loads(meta[b"huggingface"])["info"]["features"]
                return list(feats["label"]["names"])
            except (KeyError, ValueError, TypeError):
                raw = None
        if raw is None:
            raise DataError(f"{path}: no class names in the Parquet metadata; pass them with --classes a,b,c")
        try:
            names = json.loads(raw)
        except ValueError:
            names = [s.strip() for s in raw.decode().split(",")]
        return [str(n) for n in names]

    def splits(self) -> list[str]:
        return list(self._files())

    def _records(self, split: str):
        if split in self._cache:
            return self._cache[split]
        self._check_split(split)
        import pyarrow.parquet as pq

        path = self._files()[split]
        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
        for col in ("img", "label"):
            if col not in table.column_names:
                raise DataError(f"{path}: column {col!r} is missing (columns: {table.column_names})")
        if table.num_rows == 0:
            raise DataError(f"{path}: split {split!r} is empty")
        labels_col = table.column("label")
        if labels_col.null_count:
            row = int(np.flatnonzero(labels_col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{path}: row {row}: label is missing")
        labels = np.asarray(labels_col.to_numpy(), dtype=np.int64)
        self._validate_labels(labels, str(path))
        if "index" in table.column_names:
            indices = np.asarray(table.column("index").to_numpy(), dtype=np.int64)
        else:
            indices = np.arange(table.num_rows, dtype=np.int64)
        img = table.column("img")
        if hasattr(img.type, "get_field_index") and img.type.get_field_index("bytes") >= 0:
            raw = img.combine_chunks().field("bytes").to_pylist()
        else:
            raw = img.to_pylist()
        self._cache[split] = (indices, labels, raw)
        return self._cache[split]

    def _decode(self, split: str, raw, index: int):
        path = self._files()[split]
        return decode_image(raw or b"", where=f"{path} row with index {index}")


class ImageFolderSource(DatasetSource):
    """``ROOT/split/class_name/*.png|jpg``; class names are the sorted class folders."""

    def __init__(self, root: str | os.PathLike, *, classes: Sequence[str] | None = None):
        self.root = Path(root)
        self.spec = str(root)
        self._cache: dict[str, tuple] = {}
        found = sorted({d.name for s in self._split_dirs() for d in s.iterdir() if d.is_dir()})
        if classes:
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise DataError(f"{self.root}: class folders {unknown} are not in --classes")
            self.class_names = list(classes)
        else:
            self.class_names = found
        if not self.class_names:
            raise DataError(f"{self.root}: no class folders found (expected ROOT/split/class/*.png)")

    def _split_dirs(self) -> list[Path]:
        return sorted(d for d in self.root.iterdir() if d.is_dir())

    def splits(self) -> list[str]:
        return [d.name for d in self._split_dirs()]

    def _records(self, split: str):
        if split in self._cache:
            return self._cache[split]
        self._check_split(split)
        files, labels = [], []
        for label, name in enumerate(self.class_names):
            d = self.root / split / name
            if d.is_dir():
                for p in sorted(d.iterdir()):
                    if p.suffix.lower() in IMAGE_EXTENSIONS:
                        files.append(p)
                        labels.append(label)
        if not files:
            raise DataError(f"{self.root / split}: split {split!r} is empty (no {'/'.join(IMAGE_EXTENSIONS)} files)")
        out = (np.arange(len(files), dtype=np.int64), np.array(labels, dtype=np.int64), files)
        self._cache[split] = out
        return out

    def _decode(self, split: str, raw, index: int):
        return read_image_file(raw, where=str(raw))

    def uri(self, split: str, raw, index: int) -> str:
        return str(Path(raw).resolve())


class TorchvisionCIFAR10(DatasetSource):
    """CIFAR-10 through torchvision's downloader (needs internet on first use)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.spec = "cifar10"
        self.root = Path(root or Path.home() / ".cache" / "lens" / "cifar10")
        self.class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        self._cache: dict[str, tuple] = {}

    def splits(self) -> list[str]:
        return ["train", "test"]

    def _records(self, split: str):
        if split in self._cache:
            return self._cache[split]
        self._check_split(split)
        try:
            from torchvision.datasets import CIFAR10

            from lens.models import network_timeout

            with network_timeout():  # torchvision's download (progress bar), or its copy in root
                ds = CIFAR10(str(self.root), train=(split == "train"), download=True)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise DataError(
                f"Cannot download CIFAR-10 ({type(exc).__name__}: {first}). Without internet, point --data at a "
                f"local copy: a folder with train.parquet/test.parquet (e.g. --data ../shared/data/cifar10) "
                f"or an image-folder tree."
            ) from exc
        self._cache[split] = (np.arange(len(ds.targets), dtype=np.int64), np.asarray(ds.targets), ds.data)
        return self._cache[split]

    def _decode(self, split: str, raw, index: int):
        from PIL import Image

        return Image.fromarray(raw)


def open_source(spec: str | os.PathLike | None, *, classes: Sequence[str] | None = None) -> DatasetSource:
    """Open a dataset source from ``--data``: a Parquet folder, an image-folder tree, or ``cifar10``.

    ``None`` falls back to ``$LENS_DATA``.
    """
    if spec is None or str(spec) == "":
        spec = os.environ.get(ENV_DATA)
        if not spec:
            raise DataError(f"No dataset given: pass --data PATH (or set {ENV_DATA}).")
    text = str(spec)
    if text.lower() in ("cifar10", "cifar-10"):
        return TorchvisionCIFAR10()
    path = Path(text)
    if not path.exists():
        raise DataError(f"Dataset {text!r} not found: give a folder with train/test Parquet files, an image-folder tree, or 'cifar10'.")
    if path.is_dir() and any(path.glob("*.parquet")):
        return ParquetSource(path, classes=classes)
    if path.is_dir():
        return ImageFolderSource(path, classes=classes)
    raise DataError(f"Dataset {text!r} is not a folder: expected DIR/train.parquet or DIR/split/class/*.png")
