"""View and table contracts: keys unique and not null, categorical values in range.

``check_contracts(con)`` is applied by tests to every warehouse they build (ingest,
train, the end-to-end run): DuckLake has no PRIMARY KEY / UNIQUE, so these checks are
where uniqueness is enforced.
"""

from __future__ import annotations

KEYS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id",),
    "classes": ("run_id", "class_id"),
    "prediction_rows": ("run_id", "example_id"),
    "training_log": ("run_id", "epoch", "class_id"),
    "features": ("run_id", "split", "example_id"),
    "failures": ("run_id", "example_id"),
    "samples": ("run_id", "example_id"),
    "evidence": ("run_id", "example_id"),
    "hypotheses": ("hypothesis_id",),
    "hypothesis_dimensions": ("hypothesis_id", "dimension"),
    "claims": ("hypothesis_id", "dimension", "claim_index"),
    "embeddings": ("hypothesis_id", "dimension", "embedder"),
    "embedding_cache": ("embedder", "text_sha256"),
    "clusters": ("run_id", "dimension", "cluster_id"),
    "cluster_members": ("run_id", "dimension", "hypothesis_id"),
    "cluster_k_scores": ("run_id", "dimension", "k"),
    "verdicts": ("verdict_id",),
    "stage_runs": ("run_id", "stage"),
    "class_image_stats": ("dataset", "image_side", "class_id", "fact"),
    "experiments": ("experiment_id",),
    "experiment_arms": ("run_id",),
    "label_corrections": ("correction_id",),
    # views
    "predictions": ("run_id", "example_id"),
    "class_metrics": ("run_id", "class_id"),
    "run_metrics": ("run_id",),
    "confusion": ("run_id", "true_class", "pred_class"),
    "training_curve": ("run_id", "epoch", "class_id"),
    "cluster_summary": ("run_id", "dimension", "cluster_id"),
    "cluster_purity": ("run_id", "dimension", "cluster_id"),
    "data_quality_spotlight": ("run_id", "class_id", "tag"),
    "grounding_summary": ("run_id", "backend", "model", "prompt_name"),
    "failure_claims": ("hypothesis_id",),
    "latest_verdicts": ("hypothesis_id", "dimension", "reviewer"),
    "review_queue": ("hypothesis_id",),
    "recommendations": ("run_id", "cluster_id"),
    "recommendation_effects": ("experiment_id", "arm", "scope", "item_id"),
    "run_status": ("run_id",),
}

ACCEPTED: dict[tuple[str, str], set] = {
    ("runs", "kind"): {"train", "ingest"},
    ("hypotheses", "status"): {"ok", "invalid", "error"},
    ("claims", "verdict"): {"consistent", "contradicted", "unverifiable"},
    ("verdicts", "verdict"): {"agree", "disagree", "skip"},
    ("stage_runs", "status"): {"done", "partial", "failed"},
    ("features", "split"): {"train", "eval"},
    ("label_corrections", "source_format"): {"csv", "label-studio"},
    ("recommendation_effects", "scope"): {"overall", "cluster", "class"},
    ("recommendation_effects", "verdict"): {"beats control", "no clear effect", "worse than control"},
    ("recommendations", "effect"): {"untested", "beats control", "no clear effect", "worse than control"},
}

RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("class_metrics", '"precision"'): (0.0, 1.0),
    ("class_metrics", "recall"): (0.0, 1.0),
    ("class_metrics", "f1"): (0.0, 1.0),
    ("run_metrics", "accuracy"): (0.0, 1.0),
    ("cluster_purity", "purity"): (0.0, 1.0),
    ("cluster_purity", "purity_lower"): (0.0, 1.0),
    ("cluster_purity", "purity_upper"): (0.0, 1.0),
    ("cluster_purity", "reviewed_share"): (0.0, 1.0),
    ("cluster_summary", "share"): (0.0, 1.0),
    ("evidence", "label_quality"): (0.0, 1.0),
    ("evidence", "neighbour_true_share"): (0.0, 1.0),
    ("evidence", "neighbour_pred_share"): (0.0, 1.0),
    ("evidence", "saliency_centre_share"): (0.0, 1.0),
    ("predictions", "confidence"): (0.0, 1.0 + 1e-6),
    ("failures", "confidence"): (0.0, 1.0 + 1e-6),
    ("recommendation_effects", "arm_share"): (0.0, 1.0),
    ("recommendation_effects", "control_share"): (0.0, 1.0),
    ("recommendation_effects", "delta"): (-1.0, 1.0),
    ("recommendation_effects", "delta_lower"): (-1.0, 1.0),
    ("recommendation_effects", "delta_upper"): (-1.0, 1.0),
}


def relations(con) -> set[str]:
    rows = con.execute("select table_name from information_schema.tables").fetchall()
    return {r[0] for r in rows}


def check_contracts(con, *, require_rows: tuple[str, ...] = ()) -> dict[str, int]:
    """Assert every contract on the relations present; return row counts checked."""
    present = relations(con)
    counts = {}
    for rel, key in KEYS.items():
        if rel not in present:
            continue
        cols = ", ".join(key)
        n = con.execute(f"select count(*) from {rel}").fetchone()[0]
        counts[rel] = n
        dupes = con.execute(
            f"select {cols}, count(*) from {rel} group by {cols} having count(*) > 1 limit 3"
        ).fetchall()
        assert not dupes, f"{rel}: duplicate keys {dupes}"
        nulls = " or ".join(f"{c} is null" for c in key)
        n_null = con.execute(f"select count(*) from {rel} where {nulls}").fetchone()[0]
        assert n_null == 0, f"{rel}: {n_null} rows with a null key"
    for (rel, col), accepted in ACCEPTED.items():
        if rel in present:
            values = {r[0] for r in con.execute(f"select distinct {col} from {rel}").fetchall()}
            assert values <= accepted, f"{rel}.{col}: unexpected values {values - accepted}"
    for (rel, col), (lo, hi) in RANGES.items():
        if rel in present:
            bad = con.execute(f"select count(*) from {rel} where {col} < ? or {col} > ?", [lo, hi]).fetchone()[0]
            assert bad == 0, f"{rel}.{col}: {bad} values outside [{lo}, {hi}]"
    if "prediction_rows" in present:
        # confidence is stored exactly when it cannot be read from probs (040_prediction_rows)
        bad = con.execute(
            "select count(*) from prediction_rows where (probs is null) = (confidence is null)"
        ).fetchone()[0]
        assert bad == 0, f"prediction_rows: {bad} rows store both or neither of probs and confidence"
    for rel in require_rows:
        assert counts.get(rel, 0) > 0, f"{rel} is empty"
    return counts
