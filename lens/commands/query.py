"""`lens sql`: query the warehouse (read-only unless --write)."""

from __future__ import annotations

import sys

import click


#: what a statement of each refused type could do, for the error message
_WHY_REFUSED = {
    "COPY": "it writes or reads files", "EXPORT": "it writes files", "ATTACH": "it opens other databases",
    "DETACH": "it detaches databases", "LOAD": "it loads extensions", "INSTALL": "it installs extensions, maybe from the network",
    "SET": "it changes settings, and some settings write files (log_query_path)",
    "CALL": "it runs a procedure", "CHECKPOINT": "it writes the database file",
    "PRAGMA": "it changes settings or writes files (enable_profiling, force_checkpoint)",
    "TRANSACTION": "it controls transactions",
}


def _explained(con, text: str):
    """The statement that ``EXPLAIN [ANALYZE] [(options)] <statement>`` explains (None if unsure)."""
    import duckdb

    starts = [pos for pos, _ in duckdb.tokenize(text)]
    words = [text[a:b].strip().lower() for a, b in zip(starts, starts[1:] + [len(text)])]
    i = 1  # words[0] is EXPLAIN
    if i < len(words) and words[i] in ("analyze", "analyse"):
        i += 1
    if i < len(words) and words[i] == "(":
        depth = 0
        while i < len(words):
            depth += words[i] == "("
            depth -= words[i] == ")"
            i += 1
            if depth == 0:
                break
    if i >= len(words):
        return None
    try:
        inner = con.extract_statements(text[starts[i]:])
    except duckdb.Error:
        return None
    return inner[0] if len(inner) == 1 else None


def check_read_only(con, query: str) -> None:
    """Raise a LensError unless every statement in ``query`` only reads.

    Allowed: SELECT (with DESCRIBE, SHOW, SUMMARIZE, PIVOT ... IN, FROM-first and read-only
    PRAGMAs such as ``pragma show_tables``, which DuckDB parses as SELECT) and EXPLAIN [ANALYZE]
    of a SELECT. Everything else (COPY, EXPORT, SET, CALL, PRAGMA, CHECKPOINT, INSTALL/LOAD,
    ATTACH, CREATE, INSERT, ...) needs ``--write``. Checked by DuckDB's own parser, statement
    by statement, so ``select 1; copy ...`` is refused as a whole before anything runs.
    """
    import duckdb

    from lens.errors import LensError

    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise LensError(f"{type(exc).__name__}: {exc}") from exc
    if not statements:
        raise LensError("No SQL statement given.")
    for st in statements:
        kind = st.type.name
        text = st.query.strip()
        if kind == "EXPLAIN":
            inner = _explained(con, text)
            if inner is not None and inner.type.name == "SELECT":
                continue
            kind = "EXPLAIN" if inner is None else f"EXPLAIN {inner.type.name}"
            why = "it explains a statement that is not a SELECT, and EXPLAIN ANALYZE runs it"
        elif kind == "SELECT":
            continue
        else:
            first = text.split(None, 1)[0].upper() if text else kind
            kind = "CHECKPOINT" if first in ("CHECKPOINT", "FORCE") else "INSTALL" if first == "INSTALL" else kind
            why = _WHY_REFUSED.get(kind, "it changes the warehouse")
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise LensError(
            f"`lens sql` is read-only: refused a {kind} statement because {why}: {shown!r}. Without --write "
            f"only SELECT, DESCRIBE, SHOW, SUMMARIZE and EXPLAIN of a SELECT run; pass --write to run it."
        )


def _print_frame(df, fmt: str, max_rows: int | None) -> None:
    if fmt == "csv":
        df.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        click.echo(df.to_json(orient="records", date_format="iso", default_handler=str))
    else:
        import pandas as pd

        shown = df if max_rows is None or len(df) <= max_rows else df.head(max_rows)
        with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
            click.echo(shown.to_string(index=False) if len(shown) else "(no rows)")
        if len(shown) < len(df):
            click.echo(f"... {len(df) - len(shown):,} more rows (use --max-rows 0 or --format csv)")


@click.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--write", is_flag=True,
              help="Allow statements other than SELECT (INSERT, COPY, SET, ATTACH, INSTALL, ...) and file access.")
@click.option("--max-rows", default=50, show_default=True, help="Rows to print as a table (0 = all).")
@click.pass_obj
def sql(wh, query, fmt, write, max_rows):
    """Run SQL against the warehouse (read-only unless --write).

    Without --write only SELECT-like statements run (SELECT, FROM ..., DESCRIBE, SHOW,
    SUMMARIZE, EXPLAIN of a SELECT), on a connection that reads the warehouse and nothing
    else: no other files (read_csv('/etc/passwd') is refused), no network, no extensions,
    no settings. Anything else is refused before it runs, naming --write.

    Tables: runs, classes, prediction_rows, training_log, features, failures, samples,
    hypotheses, hypothesis_dimensions, evidence, claims, embeddings, clusters,
    cluster_members, verdicts. Views: predictions (prediction_rows plus confidence,
    top3_prob and loss), class_metrics, run_metrics, confusion, training_curve and more
    (see sql/views/).

    \b
    Example:
      lens sql "select class_name, f1 from class_metrics where run_id = 'demo' order by f1"
    """
    import duckdb

    from lens.errors import LensError

    with wh.connect(read_only=not write, sandbox=not write) as con:
        if not write:
            check_read_only(con, query)
        try:
            rel = con.execute(query)
            df = rel.df() if rel.description else None
        except duckdb.Error as exc:
            hint = ""
            if "read-only" in str(exc):
                hint = " (the warehouse is opened read-only: pass --write to change it)"
            elif not write and isinstance(exc, duckdb.PermissionException):
                hint = (" (read-only `lens sql` reads the warehouse only: no files, network or extensions;"
                        " pass --write to allow them)")
            elif "base table" in str(exc):
                hint = (" (views cannot be changed: predictions is a view whose rows live in"
                        " prediction_rows; the other views are listed in sql/views/)")
            raise LensError(f"{type(exc).__name__}: {exc}{hint}") from exc
    if df is not None:
        _print_frame(df, fmt, None if max_rows == 0 else max_rows)


commands = [sql]
