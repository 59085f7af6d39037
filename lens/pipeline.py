"""``lens run`` / ``lens demo``: chain the stages with one configuration.

Layer 3 (beside the CLI): the only module that calls several stages. Stages still never
import each other; they meet in the warehouse, and this module only calls their ``run``
functions in order:

    train (or ingest) -> sample -> evidence -> hypothesize -> embed -> cluster

Skipping what is done: each stage gets a fingerprint (its options plus the state of its
inputs: row counts, when the stages it reads last wrote, and the fingerprint of the stage
before). The fingerprints of the
last complete pass are stored in ``stage_runs`` (stage ``pipeline``); a stage whose
fingerprint is unchanged and whose own ``stage_runs`` row is ``done`` is skipped, so the
same command run twice does nothing new, and changing an option reruns that stage and
those after it. Stages that resume on their own (hypothesize, evidence) are still called
when their inputs grew.

Configuration: CLI flags, or a ``lens.toml`` whose keys are the option names with
underscores (``[run]`` table), e.g.::

    [run]
    data = "../shared/data/cifar10"
    run_id = "baseline"
    epochs = 3
    per_class = 15
    backend = "auto"
    k_min = 15
    k_max = 30
    min_size = 15
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from lens import defaults as D
from lens.backends.embedders import DEFAULT_EMBEDDER
from lens.errors import LensError
from lens.stages.sample import DEFAULT_PER_CLASS, DEFAULT_STRATEGY
from lens.stages.train import DEFAULT_BATCH_SIZE, DEFAULT_DEVICE, DEFAULT_EPOCHS, DEFAULT_SEED
from lens.warehouse import Warehouse, record_stage

STAGES = ("train", "sample", "evidence", "hypothesize", "embed", "cluster")


@dataclass
class RunConfig:
    """Every option of `lens run` (defaults: the reference analysis)."""

    data: str | None = None
    run_id: str | None = None
    # bring-your-own predictions instead of training
    predictions: str | None = None
    images: str | None = None
    classes: str | None = None
    # train
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    limit_train: int | None = None
    limit_test: int | None = None
    device: str = DEFAULT_DEVICE
    seed: int = DEFAULT_SEED
    pretrained: bool | None = None  # None = ImageNet weights when available, else from scratch
    weights: str | None = None
    # sample
    strategy: str = DEFAULT_STRATEGY
    per_class: int = DEFAULT_PER_CLASS
    # evidence
    saliency: bool = True
    # hypothesize
    backend: str = D.BACKEND
    model: str | None = None
    prompt: str = D.PROMPT
    concurrency: int = D.CONCURRENCY
    ollama_host: str | None = None
    base_url: str | None = None
    # embed / cluster
    embedder: str = DEFAULT_EMBEDDER
    mask_classes: bool = True
    k_min: int = D.K_MIN
    k_max: int = D.K_MAX
    min_size: int = D.MIN_SIZE

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> "RunConfig":
        """Load ``[run]`` (or top-level keys) from a TOML file; ``overrides`` (not None) win."""
        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise LensError(f"{p}: cannot read configuration ({exc})") from exc
        doc = doc.get("run", doc)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise LensError(f"{p}: unknown options {unknown}; known: {sorted(known)}")
        values = {**doc, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**values)


@dataclass
class StageReport:
    stage: str
    status: str  # 'ran' | 'skipped'
    seconds: float
    message: str


@dataclass
class PipelineResult:
    run_id: str
    stages: list[StageReport] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ran(self) -> list[str]:
        return [s.stage for s in self.stages if s.status == "ran"]


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _state(wh: Warehouse, run_id: str) -> dict[str, Any]:
    """Row counts and stage records of a run (inputs of the fingerprints)."""
    with wh.connect() as con:
        counts = {}
        for table in ("predictions", "failures", "samples", "evidence", "hypotheses", "embeddings",
                      "cluster_members"):
            counts[table] = con.execute(f"select count(*) from {table} where run_id = ?", [run_id]).fetchone()[0]
        counts["hypotheses_ok"] = con.execute(
            "select count(*) from hypotheses where run_id = ? and status = 'ok'", [run_id]
        ).fetchone()[0]
        rows = con.execute("select stage, status, finished_at from stage_runs where run_id = ?", [run_id]).fetchall()
        stages = {stage: status for stage, status, _ in rows}
        finished = {stage: str(at) for stage, _, at in rows}
        row = con.execute("select details from stage_runs where run_id = ? and stage = 'pipeline'", [run_id]).fetchone()
        exists = con.execute("select count(*) from runs where run_id = ?", [run_id]).fetchone()[0] > 0
    prints = json.loads(row[0]).get("fingerprints", {}) if row else {}
    return {"counts": counts, "stages": stages, "finished": finished, "fingerprints": prints, "exists": exists}


def _save_fingerprints(wh: Warehouse, run_id: str, prints: dict[str, str]) -> None:
    with wh.transaction() as con:
        record_stage(con, run_id, "pipeline", details={"fingerprints": prints})


def _default_run_id(cfg: RunConfig) -> str:
    if cfg.predictions:
        return Path(cfg.predictions).stem
    name = Path(str(cfg.data or "run")).name or "run"
    return name


class _Pass:
    """One `lens run` pass over a run: the stages' fingerprints so far, and what each stage did."""

    def __init__(self, wh: Warehouse, cfg: RunConfig, run_id: str, echo: Callable[[str], None], progress: bool):
        self.wh, self.cfg, self.run_id, self.echo, self.progress = wh, cfg, run_id, echo, progress
        self.result = PipelineResult(run_id)
        self.state = _state(wh, run_id)
        self.prints: dict[str, str] = dict(self.state["fingerprints"])
        self.upstream = ""
        self.source_stage = "ingest" if cfg.predictions else "train"

    def finished(self, *stages: str) -> list[str | None]:
        """When the given stages last wrote: a stage run outside `lens run` invalidates what follows."""
        return [self.state["finished"].get(s) for s in stages]

    def count(self, table: str) -> int:
        return self.state["counts"][table]

    def step(self, name: str, fp_parts: tuple, fn: Callable[[_Pass], str]) -> None:
        """Run ``fn(self)`` unless the stage is done with the same fingerprint (its options and inputs)."""
        fp = _fingerprint(self.upstream, *fp_parts)
        done = self.state["stages"].get(name if name != "train" or not self.cfg.predictions else "ingest") == "done"
        if done and self.prints.get(name) == fp:
            self.result.stages.append(StageReport(name, "skipped", 0.0, "up to date"))
            self.echo(f"[{name}] up to date, skipped")
            self.upstream = fp
            return
        self.echo(f"[{name}] running ...")
        start = time.perf_counter()
        message = fn(self)
        seconds = time.perf_counter() - start
        self.result.stages.append(StageReport(name, "ran", seconds, message))
        self.echo(f"[{name}] {message} ({seconds:.1f} s)")
        self.state = _state(self.wh, self.run_id)
        self.prints[name] = fp
        _save_fingerprints(self.wh, self.run_id, self.prints)
        self.upstream = fp


def _ingest(p: _Pass) -> str:
    from lens.stages import ingest

    cfg = p.cfg
    if p.state["exists"]:
        return "run exists (ingest is not repeated; use `lens ingest --force` to replace it)"
    classes = [c.strip() for c in cfg.classes.split(",")] if cfg.classes else None
    r = ingest.run(p.wh, predictions=cfg.predictions, run_id=p.run_id, images=cfg.images, classes=classes)
    return f"{r.rows:,} predictions, {r.failures:,} failures"


def _train(p: _Pass) -> str:
    from lens.stages import train

    cfg = p.cfg
    use_pretrained = cfg.pretrained
    if use_pretrained is None:
        use_pretrained, why = _imagenet_weights() if cfg.weights is None else (False, None)
        if not use_pretrained and cfg.weights is None:
            p.echo(f"[train] no ImageNet weights ({why}): training from scratch (--no-pretrained); "
                   f"--weights FILE starts from a local copy")
    r = train.run(
        p.wh, data=cfg.data, run_id=p.run_id, epochs=cfg.epochs, batch_size=cfg.batch_size,
        limit_train=cfg.limit_train, limit_test=cfg.limit_test, device=cfg.device, seed=cfg.seed,
        pretrained=use_pretrained, weights=cfg.weights, progress=p.progress, echo=p.echo,
    )
    if r.skipped:
        return r.message or "run exists, not retrained"
    return f"accuracy {r.accuracy:.2%}, {r.failures:,} failures, {r.seconds:.0f} s on {r.device}"


def _sample(p: _Pass) -> str:
    from lens.stages import sample

    r = sample.run(p.wh, run_id=p.run_id, strategy=p.cfg.strategy, per_class=p.cfg.per_class, seed=p.cfg.seed)
    return f"{r.n} of {r.failures:,} failures sampled ({r.strategy})"


def _evidence(p: _Pass) -> str:
    """Resumes by itself: only failures without evidence are computed."""
    from lens.stages import evidence

    r = evidence.run(p.wh, run_id=p.run_id, saliency=p.cfg.saliency, progress=p.progress)
    for part, why in r.skipped.items():
        p.echo(f"[evidence] skipped {part}: {why}")
    flagged = ("" if r.label_issues_failures is None
               else f"; {r.label_issues_failures} flagged as possible label issues")
    return f"evidence for {r.computed} failures ({r.already} already had it){flagged}"


def _hypothesize(p: _Pass) -> str:
    """Resumes by itself: only samples without an answer are asked."""
    from lens.stages import hypothesize

    cfg = p.cfg
    r = hypothesize.run(
        p.wh, run_id=p.run_id, prompt=cfg.prompt, backend=cfg.backend, model=cfg.model,
        concurrency=cfg.concurrency, ollama_host=cfg.ollama_host, base_url=cfg.base_url,
        progress=p.progress, echo=p.echo,
    )
    why = f" ({r.chosen_reason})" if r.chosen_reason else ""
    return (f"{r.backend}/{r.model}{why}: {r.ok} ok, {r.invalid} invalid, {r.error} error, "
            f"{r.skipped} already answered")


def _embed(p: _Pass) -> str:
    from lens.stages import embed

    r = embed.run(p.wh, run_id=p.run_id, embedder=p.cfg.embedder, mask=p.cfg.mask_classes, progress=p.progress)
    return f"{r.rows} texts embedded ({r.cache_hits} from cache) with {r.embedder}"


def _cluster(p: _Pass) -> str:
    from lens.stages import cluster

    cfg = p.cfg
    r = cluster.run(p.wh, run_id=p.run_id, k_min=cfg.k_min, k_max=cfg.k_max, min_size=cfg.min_size,
                    seed=cfg.seed, progress=p.progress)
    for w in r.warnings:
        p.echo(f"[cluster] {w}")
    parts = []
    for d in r.dimensions:
        for note in d.notes:
            p.echo(f"[cluster] {d.dimension}: {note}")
        parts.append(f"{d.dimension}: k={d.k}, {d.clusters} clusters, {d.noise} noise")
    return "; ".join(parts)


def run_pipeline(
    wh: Warehouse,
    cfg: RunConfig,
    *,
    echo: Callable[[str], None] = print,
    progress: bool | None = None,
) -> PipelineResult:
    """Run every stage that is not up to date for ``cfg`` and return what happened.

    ``progress``: progress bars on stderr (default: when stderr is a terminal). Each stage's
    fingerprint holds its options, the state of its inputs and the fingerprint before it.
    """
    if progress is None:
        progress = sys.stderr.isatty()
    if not cfg.predictions and not cfg.data:
        raise LensError("Give --data DATASET to train on (or --predictions FILE to import predictions).")
    p = _Pass(wh, cfg, cfg.run_id or _default_run_id(cfg), echo, progress)
    if cfg.predictions:
        p.step("train", ("ingest", cfg.predictions, cfg.images, cfg.classes), _ingest)
    else:
        p.step("train", ("train", cfg.data, cfg.epochs, cfg.batch_size, cfg.limit_train, cfg.limit_test, cfg.seed,
                         cfg.pretrained, cfg.weights), _train)
    p.step("sample", (cfg.strategy, cfg.per_class, cfg.seed, p.count("failures"), *p.finished(p.source_stage)),
           _sample)
    p.step("evidence", (cfg.saliency, p.count("failures"), *p.finished(p.source_stage)), _evidence)
    p.step("hypothesize", (cfg.prompt, cfg.backend, cfg.model, p.count("samples"), *p.finished("sample", "evidence")),
           _hypothesize)
    p.step("embed", (cfg.embedder, cfg.mask_classes, p.count("hypotheses_ok"), *p.finished("hypothesize")), _embed)
    p.step("cluster", (cfg.k_min, cfg.k_max, cfg.min_size, cfg.seed, p.count("embeddings"), *p.finished("embed")),
           _cluster)
    p.result.summary = summarize(wh, p.run_id)
    return p.result


def _imagenet_weights() -> tuple[bool, str | None]:
    """Whether torchvision's ImageNet ResNet-18 weights are cached or can be downloaded now (and why not)."""
    from lens.models import imagenet_weights_available

    return imagenet_weights_available()


def summarize(wh: Warehouse, run_id: str, *, top: int = 3) -> dict[str, Any]:
    """Metrics, clusters per dimension and top recommendations of a run."""
    with wh.connect(read_only=True) as con:
        metrics = con.execute(
            "select n, accuracy, macro_f1, failures from run_metrics where run_id = ?", [run_id]
        ).fetchone()
        clusters = con.execute(
            "select dimension, cluster_id, name, size from cluster_summary where run_id = ?"
            " order by dimension, cluster_id = -1, size desc",
            [run_id],
        ).fetchall()
        recs = con.execute(
            "select rank, cluster_id, name, size, reviewed, purity_lower from recommendations"
            " where run_id = ? order by rank limit ?",
            [run_id, top],
        ).fetchall()
        sampled = con.execute("select count(*) from samples where run_id = ?", [run_id]).fetchone()[0]
        tags = con.execute(
            "select tag, sum(count)::bigint from data_quality_spotlight where run_id = ? group by tag order by 2 desc",
            [run_id],
        ).fetchall()
    per_dim: dict[str, list[dict[str, Any]]] = {}
    for dim, cid, name, size in clusters:
        per_dim.setdefault(dim, []).append({"cluster_id": cid, "name": name, "size": size})
    return {
        "run_id": run_id,
        "examples": metrics[0] if metrics else 0,
        "accuracy": metrics[1] if metrics else None,
        "macro_f1": metrics[2] if metrics else None,
        "failures": metrics[3] if metrics else 0,
        "sampled": sampled,
        "tags": {t: n for t, n in tags},
        "clusters": per_dim,
        "recommendations": [
            {"rank": r, "cluster_id": c, "name": n, "size": s, "reviewed": rv, "purity_lower": pl}
            for r, c, n, s, rv, pl in recs
        ],
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"Run {summary['run_id']}"]
    if summary.get("accuracy") is not None:
        lines.append(
            f"  accuracy {summary['accuracy']:.2%}, macro F1 {summary['macro_f1']:.3f} on {summary['examples']:,} "
            f"examples; {summary['failures']:,} failures, {summary['sampled']} sampled"
        )
    if summary.get("tags"):
        total = sum(summary["tags"].values())
        lines.append("  data quality: " + ", ".join(f"{t} {n} of {total} ({n / total:.0%})"
                                                     for t, n in summary["tags"].items()))
    for dim, rows in summary["clusters"].items():
        lines.append(f"  {dim}:")
        for r in rows:
            tag = "noise" if r["cluster_id"] == -1 else f"#{r['cluster_id']}"
            name = r["name"] or ""
            lines.append(f"    {tag:>6}  {r['size']:>4}  {name[:100]}{'...' if len(name) > 100 else ''}")
    if summary["recommendations"]:
        lines.append("  top recommendations:")
        for r in summary["recommendations"]:
            note = (f"purity >= {r['purity_lower']:.2f}" if r["reviewed"] else "unreviewed")
            lines.append(f"    {r['rank']}. {(r['name'] or '')[:100]} ({r['size']} failures, {note})")
    return "\n".join(lines)


__all__ = ["RunConfig", "PipelineResult", "run_pipeline", "summarize", "format_summary", "STAGES"]
