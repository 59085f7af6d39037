"""`lens warehouse copy SRC DEST`: move a warehouse between a file and a DuckLake."""

from __future__ import annotations

import click


@click.group("warehouse")
def warehouse_group():
    """Move a warehouse: a DuckDB file into a team's DuckLake, or back.

    \b
    Example:
      lens warehouse copy warehouse/lens.duckdb \\
          "ducklake:postgres:dbname=lens host=db.lan user=lens" --dest-lake-data /mnt/lake
    """


@warehouse_group.command("copy")
@click.argument("src")
@click.argument("dest")
@click.option("--src-lake-data", default=None, metavar="DIR", help="Data folder of SRC when it is a ducklake: one "
              "(default: what its catalog remembers).")
@click.option("--dest-lake-data", default=None, metavar="DIR", envvar="LENS_LAKE_DATA",
              help="Data folder of DEST when it is a new ducklake: one. Env: LENS_LAKE_DATA.")
def copy_cmd(src, dest, src_lake_data, dest_lake_data):
    """Copy every table of SRC into the empty warehouse DEST, in one transaction, then check
    each table's row count and row digest against SRC.

    SRC and DEST are warehouse files or ducklake:<catalog> strings (as --warehouse takes).
    Artifacts (checkpoints under the warehouse's artifacts/ folder) are not copied: copy that
    folder beside DEST (for a lake: into its data folder).

    \b
    Example:
      lens warehouse copy warehouse/lens.duckdb "ducklake:postgres:dbname=lens host=db.lan" \\
          --dest-lake-data /mnt/lake
      lens warehouse copy "ducklake:postgres:dbname=lens host=db.lan" backup.duckdb
    """
    from lens.warehouse import Warehouse, copy_warehouse

    source = Warehouse(src, lake_data=src_lake_data)
    target = Warehouse(dest, lake_data=dest_lake_data)
    click.echo(f"Copying {source.describe()} into {target.describe()}:")
    counts = copy_warehouse(source, target, echo=click.echo)
    click.echo(f"Copied {sum(counts.values()):,} rows in {len(counts)} tables; row counts and digests match.")


commands = [warehouse_group]
