"""What the dashboard and the review page read, one short connection per call.

Every function opens the warehouse, runs its queries with parameters and closes it again,
so the app never holds the DuckDB file between requests (CLI stages get it back at once).
Connections are opened read-write on purpose: DuckDB refuses, inside one process, a
read-only connection while a read-write one (a verdict being saved) is open on the same
file, and the app's threads share one process.
"""

from __future__ import annotations

from typing import Any

from lens.warehouse import Warehouse, load_query

REFERENCE_ORDER = ("data_quality", "visual_cause", "fix")


def _rows(con, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def order_dimensions(dims) -> list[str]:
    """Reference dimensions in their prompt order first, any others alphabetically."""
    return sorted(set(dims), key=lambda d: (REFERENCE_ORDER.index(d) if d in REFERENCE_ORDER else 99, d))


def runs(wh: Warehouse) -> list[str]:
    with wh.connect() as con:
        return [r[0] for r in con.execute("select run_id from runs order by created_at desc, run_id").fetchall()]


def dimensions(con, run_id: str) -> list[str]:
    rows = con.execute("select distinct dimension from hypothesis_dimensions where run_id = ?", [run_id]).fetchall()
    return order_dimensions(r[0] for r in rows)


def overview(wh: Warehouse, run_id: str) -> dict[str, Any]:
    """Everything the dashboard page shows for one run, in one connection."""
    with wh.connect() as con:
        out: dict[str, Any] = {"run_id": run_id}
        out["runs"] = [r[0] for r in con.execute("select run_id from runs order by created_at desc, run_id").fetchall()]
        m = _rows(con, "select * from run_metrics where run_id = ?", [run_id])
        out["metrics"] = m[0] if m else {}
        out["sampled"] = con.execute("select count(*) from samples where run_id = ?", [run_id]).fetchone()[0]
        out["hypotheses"] = con.execute(
            "select count(*) from hypotheses where run_id = ? and status = 'ok'", [run_id]).fetchone()[0]
        out["reviewed"] = con.execute(
            "select count(distinct hypothesis_id) from latest_verdicts where run_id = ?", [run_id]).fetchone()[0]
        out["classes"] = _rows(con, "select * from class_metrics where run_id = ? order by class_id", [run_id])
        out["confusion"] = _rows(con, "select true_class, pred_class, count from confusion where run_id = ?", [run_id])
        out["curve"] = _rows(con, "select * from training_curve where run_id = ? order by class_id, epoch", [run_id])
        out["dimensions"] = dimensions(con, run_id)
        out["tag_counts"] = _rows(
            con,
            "select dimension, tag, count(*) as n from hypothesis_dimensions"
            " where run_id = ? and tag is not null group by dimension, tag order by dimension, n desc, tag",
            [run_id],
        )
        out["candidates"] = _rows(
            con,
            """
            select c.rank, c.example_id, c.given_name, c.suggested_name, c.label_error_score, c.candidate,
                   c.ambiguity_score, c.true_prob, c.confidence, c.neighbour_true_share, c.neighbour_pred_share,
                   c.tag, c.tag_check, c.tag_check_fact, c.hypothesis_id, d.text
            from annotation_candidates as c
            left join hypothesis_dimensions as d
                on d.hypothesis_id = c.hypothesis_id and d.dimension = 'data_quality'
            where c.run_id = ?
            order by c.rank
            limit 20
            """,
            [run_id],
        )
        power = _rows(con, "select * from detection_power where run_id = ?", [run_id])
        out["detection_power"] = power[0] if power else None
        out["clusters"] = _rows(
            con,
            """
            select p.*, c.representatives, c.medoid_text,
                   (select list(m.example_id order by list_position(c.representatives, m.hypothesis_id))
                    from cluster_members as m
                    where m.run_id = c.run_id and m.dimension = c.dimension
                      and list_contains(c.representatives, m.hypothesis_id)) as rep_examples
            from cluster_purity as p
            join clusters as c on c.run_id = p.run_id and c.dimension = p.dimension and c.cluster_id = p.cluster_id
            where p.run_id = ?
            order by p.dimension, p.cluster_id = -1, p.size desc, p.cluster_id
            """,
            [run_id],
        )
        out["recommendations"] = _rows(
            con,
            "select rank, cluster_id, name, size, reviewed, purity, purity_lower, purity_upper, medoid_text,"
            " effect, lift, lift_lower, lift_upper from recommendations where run_id = ? order by rank limit 10",
            [run_id],
        )
    return out


def compare(wh: Warehouse, run_a: str, run_b: str) -> dict[str, Any]:
    """Per-class F1 deltas and per-cluster outcomes of run_a's failures in run_b (sql/queries)."""
    params = {"a": run_a, "b": run_b}
    with wh.connect() as con:
        acc = dict(con.execute("select run_id, accuracy from run_metrics where run_id in (?, ?)",
                               [run_a, run_b]).fetchall())
        return {
            "a": run_a, "b": run_b, "accuracy_a": acc.get(run_a), "accuracy_b": acc.get(run_b),
            "classes": _rows(con, load_query("compare_classes"), params),
            "clusters": _rows(con, load_query("compare_clusters"), params),
        }


def map_points(wh: Warehouse, run_id: str, dimension: str) -> list[dict[str, Any]]:
    with wh.connect() as con:
        return _rows(
            con,
            """
            select m.hypothesis_id, m.example_id, m.cluster_id, m.x, m.y, c.name, d.text
            from cluster_members as m
            left join clusters as c on c.run_id = m.run_id and c.dimension = m.dimension and c.cluster_id = m.cluster_id
            left join hypothesis_dimensions as d on d.hypothesis_id = m.hypothesis_id and d.dimension = m.dimension
            where m.run_id = ? and m.dimension = ?
            order by m.cluster_id, m.hypothesis_id
            """,
            [run_id, dimension],
        )


def review_options(wh: Warehouse, run_id: str) -> dict[str, Any]:
    """Filter choices of the review page: clusters, class pairs, tags, dimensions."""
    with wh.connect() as con:
        return {
            "dimensions": dimensions(con, run_id),
            "clusters": _rows(con, "select dimension, cluster_id, name, size from clusters where run_id = ?"
                                   " order by dimension, cluster_id = -1, size desc, cluster_id", [run_id]),
            "pairs": _rows(con, "select label, pred, any_value(true_name) as true_name, any_value(pred_name) as pred_name,"
                                " count(*) as n from review_queue where run_id = ? group by label, pred"
                                " order by n desc, label, pred", [run_id]),
            "tags": [r[0] for r in con.execute(
                "select distinct tag from hypothesis_dimensions where run_id = ? and tag is not null order by tag",
                [run_id]).fetchall()],
        }


def queue(wh: Warehouse, run_id: str, *, cluster: tuple[str, int] | None = None, pair: tuple[int, int] | None = None,
          tag: str | None = None, unreviewed: bool = False) -> list[str]:
    """Hypothesis ids of the review queue (``queue_rank`` order: contradicted tags first, then by
    diagnosis score) after the filters."""
    sql = "select hypothesis_id from review_queue as q where q.run_id = ?"
    params: list[Any] = [run_id]
    if cluster is not None:
        sql += (" and q.hypothesis_id in (select hypothesis_id from cluster_members"
                " where run_id = ? and dimension = ? and cluster_id = ?)")
        params += [run_id, cluster[0], cluster[1]]
    if pair is not None:
        sql += " and q.label = ? and q.pred = ?"
        params += [pair[0], pair[1]]
    if tag:
        sql += " and list_contains(q.tags, ?)"
        params.append(tag)
    if unreviewed:
        sql += " and not q.reviewed"
    sql += " order by q.queue_rank"
    with wh.connect() as con:
        return [r[0] for r in con.execute(sql, params).fetchall()]


def failure(wh: Warehouse, hypothesis_id: str, ids: list[str]) -> dict[str, Any] | None:
    """One failure for the review page, with everything shown about it."""
    with wh.connect() as con:
        head = _rows(con, "select q.*, h.description from review_queue as q join hypotheses as h"
                          " on h.hypothesis_id = q.hypothesis_id where q.hypothesis_id = ?", [hypothesis_id])
        if not head:
            return None
        out = head[0]
        run_id, example_id = out["run_id"], out["example_id"]
        names = dict(con.execute("select class_id, class_name from classes where run_id = ?", [run_id]).fetchall())
        pred = con.execute("select top3_class, top3_prob from predictions where run_id = ? and example_id = ?",
                           [run_id, example_id]).fetchone()
        out["top3"] = [(names.get(c, str(c)), p) for c, p in zip(pred[0] or [], pred[1] or [])] if pred else []
        out["answers"] = _rows(
            con,
            """
            select d.dimension, d.tag, d.text, d.summary, m.cluster_id, c.name as cluster_name
            from hypothesis_dimensions as d
            left join cluster_members as m on m.hypothesis_id = d.hypothesis_id and m.dimension = d.dimension
            left join clusters as c on c.run_id = m.run_id and c.dimension = m.dimension and c.cluster_id = m.cluster_id
            where d.hypothesis_id = ?
            """,
            [hypothesis_id],
        )
        out["claims"] = _rows(con, "select dimension, claim_index, kind, claim, verdict, fact from claims"
                                   " where hypothesis_id = ? order by dimension, claim_index", [hypothesis_id])
        ev = _rows(con, "select * exclude (saliency_png), saliency_png is not null as has_saliency from evidence"
                        " where run_id = ? and example_id = ?", [run_id, example_id])
        out["evidence"] = ev[0] if ev else None
        out["neighbour_names"] = names
        out["verdicts"] = _rows(con, "select dimension, reviewer, verdict, note, created_at from latest_verdicts"
                                     " where hypothesis_id = ? order by created_at", [hypothesis_id])
        out["queue_reviewed"] = con.execute(
            "select count(*) from review_queue where reviewed and hypothesis_id in (select unnest(?::varchar[]))",
            [ids]).fetchone()[0] if ids else 0
    return out


def image(wh: Warehouse, kind: str, run_id: str, example_id: int) -> bytes | None:
    """PNG bytes of a failure's image (``kind='img'``) or saliency overlay (``'saliency'``)."""
    sql = {
        "img": "select image_png from failures where run_id = ? and example_id = ?",
        "saliency": "select saliency_png from evidence where run_id = ? and example_id = ?",
    }[kind]
    with wh.connect() as con:
        row = con.execute(sql, [run_id, example_id]).fetchone()
    return row[0] if row and row[0] is not None else None
