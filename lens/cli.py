"""The ``lens`` command line: a thin click layer over :mod:`lens.stages`.

Commands live one module per group in :mod:`lens.commands`; each module exposes a list
``commands`` of click commands and imports nothing heavy at import time (``lens --help``
must not load torch or sentence-transformers).
"""

from __future__ import annotations

import importlib
import pkgutil

import click

from lens import __version__
from lens.errors import LensError
from lens.warehouse import DEFAULT_PATH, ENV_PATH, Warehouse


class LensGroup(click.Group):
    """A click group that turns LensError into a clean ``Error: ...`` message."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LensError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=LensGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--warehouse",
    "warehouse_path",
    envvar=ENV_PATH,
    default=DEFAULT_PATH,
    show_default=True,
    type=click.Path(dir_okay=False),
    help=f"DuckDB warehouse file (created on first use), or ducklake:<catalog> for a team's lake "
    f"(ducklake:postgres:dbname=lens host=HOST user=USER). Env: {ENV_PATH}.",
)
@click.option("--lake-data", envvar="LENS_LAKE_DATA", default=None, metavar="DIR",
              help="Where a ducklake: warehouse keeps its Parquet files (needed to create it). Env: LENS_LAKE_DATA.")
@click.version_option(__version__, prog_name="lens")
@click.pass_context
def cli(ctx: click.Context, warehouse_path: str, lake_data: str | None) -> None:
    """Lens: structured error analysis for ML classifiers.

    Train or import a classifier, collect its failures, ask a vision-language model
    (or the measured analyst) why each one failed, cluster the answers, and review
    them in a dashboard. Everything lands in one DuckDB warehouse you can query.

    \b
    Example:
      lens demo                       # CIFAR-10 end to end, then the dashboard
      lens sql "select * from class_metrics"
    """
    ctx.obj = Warehouse(warehouse_path, lake_data=lake_data)
    if ctx.obj.lake is not None and not {"-h", "--help"} & set(ctx.args):
        ctx.obj.check()  # a lake that cannot be opened or written ends here, before any work


def _register() -> None:
    import lens.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"lens.commands.{info.name}")
        for command in getattr(module, "commands", []):
            cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="lens")


if __name__ == "__main__":  # pragma: no cover
    main()
