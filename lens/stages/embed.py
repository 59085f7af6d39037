"""``lens embed``: a sentence vector for each dimension of each hypothesis answer.

Input: ``hypotheses`` (status 'ok' only) and ``hypothesis_dimensions`` of one run. A run
may hold several hypothesis sets (one per backend, model and prompt_sha256); the most
recent set (latest ``created_at``) is used unless ``backend`` / ``model`` / ``prompt``
(a prompt name or a prefix of its sha256) pick another.

Per row the embedded text is the dimension's ``summary`` (data_quality's one-sentence
verdict) when present, else its ``text``. With ``mask_classes`` (the default) the run's
class names are first replaced by ``[CLASS]`` (case-insensitive, whole words, plural
``s``/``es``, multiword names with spaces, ``_`` or ``-``), so that vectors group by kind
of cause rather than by which classes were confused.

Output: ``embeddings`` rows (the embedded text, its sha256, ``masked``, the embedder's
name and dimension, the L2-normalised vector as ``FLOAT[]``), replacing the run's rows for
that embedder (only the given dimensions when ``dimensions`` is set). Vectors are cached
in ``embedding_cache`` by (embedder, sha256 of the text): a rerun, or a text repeated in
this run or any other, is not embedded again.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from lens import defaults as D
from lens.backends.embedders import DEFAULT_EMBEDDER, Embedder, create
from lens.errors import LensError
from lens.warehouse import Warehouse, class_names, delete_rows, insert_arrow, record_stage, require_run, utcnow

PLACEHOLDER = "[CLASS]"


@dataclass
class EmbedResult:
    run_id: str
    embedder: str
    dim: int
    backend: str
    model: str
    prompt_sha256: str
    rows: int                   # embeddings written
    unique_texts: int           # distinct texts among them
    cache_hits: int             # distinct texts found in embedding_cache
    encoded: int                # distinct texts sent to the model
    masked: bool
    per_dimension: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@lru_cache(maxsize=64)
def _class_pattern(names: tuple[str, ...]) -> re.Pattern | None:
    parts = []
    for name in sorted({n.strip() for n in names if n and n.strip()}, key=len, reverse=True):
        words = [re.escape(w) for w in re.split(r"[\s_\-]+", name) if w]
        if words:
            parts.append(r"[\s_\-]+".join(words) + r"(?:e?s)?")
    if not parts:
        return None
    return re.compile(r"(?<![\w\[])(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


def mask_classes(text: str, names: Sequence[str], placeholder: str = PLACEHOLDER) -> str:
    """Replace every mention of a class name in ``text`` by ``placeholder``.

    Case-insensitive, whole words only, with a plural ``s``/``es``; multiword names match
    with spaces, underscores or hyphens between words; longer names win over their parts
    ("pickup truck" before "truck").

    >>> mask_classes("A Cats' face, like a pickup-truck's grille", ["cat", "pickup_truck", "truck"])
    "A [CLASS]' face, like a [CLASS]'s grille"
    """
    pattern = _class_pattern(tuple(names))
    return text if pattern is None else pattern.sub(placeholder, text)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _select_set(con, run_id: str, backend: str | None, model: str | None, prompt: str | None):
    rows = con.execute(
        """
        select backend, model, prompt_sha256, any_value(prompt_name), max(created_at) as latest, count(*)
        from hypotheses
        where run_id = ? and status = 'ok'
          and (?::varchar is null or backend = ?)
          and (?::varchar is null or model = ?)
          and (?::varchar is null or prompt_name = ? or starts_with(prompt_sha256, ?))
        group by backend, model, prompt_sha256
        order by latest desc, backend, model, prompt_sha256
        """,
        [run_id, backend, backend, model, model, prompt, prompt, prompt],
    ).fetchall()
    if not rows:
        sets = con.execute(
            "select backend, model, prompt_name, count(*) filter (where status = 'ok') from hypotheses"
            " where run_id = ? group by all order by all",
            [run_id],
        ).fetchall()
        if not sets:
            raise LensError(f"Run {run_id!r} has no hypotheses yet: run `lens hypothesize --run {run_id}` first.")
        listed = "; ".join(f"--backend {b} --model {m} --prompt {p} ({n} ok)" for b, m, p, n in sets)
        raise LensError(f"No 'ok' hypotheses in run {run_id!r} match those filters. Sets: {listed}")
    return rows[0]


def _cached_vectors(con, embedder: str, shas: list[str]) -> dict[str, np.ndarray]:
    if not shas:
        return {}
    con.register("_lens_embed_keys", pa.table({"text_sha256": pa.array(shas, pa.string())}))
    try:
        tbl = con.execute(
            "select c.text_sha256, c.vector from embedding_cache c"
            " join _lens_embed_keys k using (text_sha256) where c.embedder = ?",
            [embedder],
        ).to_arrow_table()
    finally:
        con.unregister("_lens_embed_keys")
    keys = tbl.column("text_sha256").to_pylist()
    col = tbl.column("vector").combine_chunks()
    lengths = pa.compute.list_value_length(col).to_numpy(zero_copy_only=False)
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    ends = np.cumsum(lengths)
    return {k: flat[e - n:e] for k, n, e in zip(keys, lengths, ends)}


def vector_array(vectors: np.ndarray) -> pa.Array:
    """(n, d) float32 -> Arrow list<float32> (DuckDB FLOAT[])."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1)))


def _rows(con, run_id: str, set_backend: str, set_model: str, set_sha: str,
          dimensions: Sequence[str] | None) -> list[tuple[str, str, str]]:
    """(hypothesis_id, dimension, text) of the set's 'ok' answers, only ``dimensions`` when given."""
    tbl = con.execute(
        """
        select d.hypothesis_id, d.dimension,
               coalesce(nullif(trim(d.summary), ''), d.text) as text
        from hypothesis_dimensions d
        join hypotheses h on h.hypothesis_id = d.hypothesis_id
        where h.run_id = ? and h.status = 'ok'
          and h.backend = ? and h.model = ? and h.prompt_sha256 = ?
          and nullif(trim(coalesce(nullif(trim(d.summary), ''), d.text)), '') is not null
        order by d.dimension, d.hypothesis_id
        """,
        [run_id, set_backend, set_model, set_sha],
    ).fetchall()
    if dimensions:
        wanted = set(dimensions)
        have = {r[1] for r in tbl}
        unknown = sorted(wanted - have)
        if unknown:
            raise LensError(
                f"No text to embed for dimension(s) {', '.join(unknown)} in run {run_id!r}; "
                f"dimensions: {', '.join(sorted(have)) or 'none'}"
            )
        tbl = [r for r in tbl if r[1] in wanted]
    if not tbl:
        raise LensError(f"Run {run_id!r} has 'ok' hypotheses but no dimension text to embed.")
    return tbl


@dataclass
class _Vectors:
    """Vectors of the distinct texts: from the cache, or newly encoded (``missing``, ``new``)."""

    lookup: dict[str, np.ndarray]
    missing: list[str]          # sha256 of the texts encoded now
    new: np.ndarray             # their vectors, (len(missing), dim)
    bad: list[str]              # cache rows of another length (same name, another model)


def _vectors(warehouse: Warehouse, emb: Embedder, texts: list[str], shas: list[str], *, batch_size: int,
             progress: bool) -> _Vectors:
    first: dict[str, int] = {}
    for i, s in enumerate(shas):
        first.setdefault(s, i)
    with warehouse.connect() as con:
        cached = _cached_vectors(con, emb.name, list(first))
    bad = [s for s, v in cached.items() if v.shape != (emb.dim,)]
    for s in bad:  # a cache row of another shape (same name, different model): embed again
        del cached[s]
    missing = [s for s in first if s not in cached]
    new_vecs = np.empty((0, emb.dim), np.float32)
    if missing:
        from tqdm.auto import tqdm

        with tqdm(total=len(missing), desc=f"embed {emb.name}", unit="text", disable=None if progress else True) as bar:
            new_vecs = emb.encode([texts[first[s]] for s in missing], batch_size=batch_size, progress=bar.update)
    lookup = dict(cached)
    lookup.update(zip(missing, new_vecs))
    return _Vectors(lookup, missing, new_vecs, bad)


def _update_cache(con, emb: Embedder, vec: _Vectors) -> None:
    """Drop cache rows of another length; add the new vectors that nobody cached meanwhile."""
    if not (vec.missing or vec.bad):
        return
    # another process may have cached some meanwhile: insert only what is still absent
    present = set(_cached_vectors(con, emb.name, vec.missing))
    keep = [i for i, s in enumerate(vec.missing) if s not in present]
    if vec.bad:
        con.register("_lens_embed_bad", pa.table({"text_sha256": pa.array(vec.bad, pa.string())}))
        try:
            con.execute(
                "delete from embedding_cache where embedder = ?"
                " and text_sha256 in (select text_sha256 from _lens_embed_bad)",
                [emb.name],
            )
        finally:
            con.unregister("_lens_embed_bad")
    if keep:
        insert_arrow(con, "embedding_cache", pa.table({
            "embedder": pa.array([emb.name] * len(keep), pa.string()),
            "text_sha256": pa.array([vec.missing[i] for i in keep], pa.string()),
            "dim": pa.array([emb.dim] * len(keep), pa.int32()),
            "vector": vector_array(vec.new[keep]),
        }))


def run(
    warehouse: Warehouse,
    *,
    run_id: str | None = None,
    embedder: str | Embedder = DEFAULT_EMBEDDER,
    dimensions: Sequence[str] | None = None,
    backend: str | None = None,
    model: str | None = None,
    prompt: str | None = None,
    batch_size: int = D.EMBED_BATCH_SIZE,
    mask: bool = True,
    progress: bool = True,
) -> EmbedResult:
    """Embed the dimensions of a run's hypotheses (see the module docstring)."""
    started = utcnow()
    t0 = time.perf_counter()
    if batch_size < 1:
        raise LensError("--batch-size must be at least 1")
    with warehouse.connect() as con:
        run_id = require_run(con, run_id)
        set_backend, set_model, set_sha, _, _, _ = _select_set(con, run_id, backend, model, prompt)
        names = class_names(con, run_id)
        tbl = _rows(con, run_id, set_backend, set_model, set_sha, dimensions)

    dims = [r[1] for r in tbl]
    texts = [mask_classes(r[2], names) if mask else r[2] for r in tbl]
    shas = [text_sha256(t) for t in texts]
    emb = create(embedder) if isinstance(embedder, str) else embedder
    vec = _vectors(warehouse, emb, texts, shas, batch_size=batch_size, progress=progress)
    vectors = np.stack([vec.lookup[s] for s in shas]).astype(np.float32, copy=False)

    n = len(tbl)
    rows = pa.table({
        "run_id": pa.array([run_id] * n, pa.string()),
        "hypothesis_id": pa.array([r[0] for r in tbl], pa.string()),
        "dimension": pa.array(dims, pa.string()),
        "embedder": pa.array([emb.name] * n, pa.string()),
        "masked": pa.array([bool(mask)] * n, pa.bool_()),
        "text": pa.array(texts, pa.string()),
        "text_sha256": pa.array(shas, pa.string()),
        "dim": pa.array([emb.dim] * n, pa.int32()),
        "vector": vector_array(vectors),
    })
    per_dim: dict[str, int] = {}
    for d in dims:
        per_dim[d] = per_dim.get(d, 0) + 1
    unique = len(vec.lookup)
    result = EmbedResult(
        run_id=run_id, embedder=emb.name, dim=emb.dim, backend=set_backend, model=set_model,
        prompt_sha256=set_sha, rows=n, unique_texts=unique, cache_hits=unique - len(vec.missing),
        encoded=len(vec.missing), masked=bool(mask), per_dimension=per_dim,
    )
    with warehouse.transaction() as con:
        _update_cache(con, emb, vec)
        if dimensions:
            for d in sorted(per_dim):
                delete_rows(con, "embeddings", {"run_id": run_id, "embedder": emb.name, "dimension": d})
        else:
            delete_rows(con, "embeddings", {"run_id": run_id, "embedder": emb.name})
        insert_arrow(con, "embeddings", rows)
        record_stage(con, run_id, "embed", started_at=started, details={
            "embedder": emb.name, "dim": emb.dim, "backend": set_backend, "model": set_model,
            "prompt_sha256": set_sha, "rows": n, "unique_texts": unique, "cache_hits": result.cache_hits,
            "encoded": result.encoded, "masked": bool(mask), "per_dimension": per_dim, "batch_size": batch_size,
        })
    result.seconds = time.perf_counter() - t0
    return result
