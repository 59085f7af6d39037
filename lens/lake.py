"""A Lens warehouse on DuckLake: the same tables as Parquet files plus a SQL catalog.

``--warehouse ducklake:<catalog>`` (env ``LENS_WAREHOUSE``) names the catalog exactly as
DuckDB's DuckLake ``ATTACH`` takes it:

* ``ducklake:postgres:dbname=lens host=db.lan user=lens`` -- a PostgreSQL catalog (libpq
  key=value pairs; keep the password in ``PGPASSWORD`` or ``~/.pgpass``), for a team whose
  writers and reviewers run on several machines;
* ``ducklake:team.ducklake`` -- a local DuckDB catalog file (one machine, several processes
  take turns on it like on a warehouse file).

``--lake-data DIR`` (env ``LENS_LAKE_DATA``) is where the Parquet files go; it is needed to
create a lake and optional afterwards (the catalog remembers it). Checkpoints go beside the
data, under ``DIR/artifacts/``.

The DuckLake and postgres extensions are loaded from the PyPI packages
``duckdb-extension-ducklake`` and ``duckdb-extension-postgres_scanner`` built for the pinned
duckdb; nothing is downloaded at run time. Every problem found while opening (missing
package, bad catalog string, PostgreSQL unreachable or refusing, data folder not writable)
is one :class:`~lens.errors.LensError` line saying what to fix, raised before any work.

Inside a process a PostgreSQL lake is attached once, in one in-memory DuckDB instance, and
every :meth:`Warehouse.connect` gets its own cursor on it with the lake as default database
(``USE``). A local catalog file takes DuckDB's file lock like a warehouse file, so there each
connection attaches it afresh and lets go when it closes (processes take turns). DuckLake's commits are optimistic: a conflicting one raises, and
:meth:`Warehouse.transaction` replays it (see :class:`ReplayingConnection`).
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import shlex
import tempfile
import time
from pathlib import Path

import duckdb

from lens.errors import LensError

PREFIX = "ducklake:"
ENV_LAKE_DATA = "LENS_LAKE_DATA"
ALIAS = "lens_lake"
METADATA = f"__ducklake_metadata_{ALIAS}"
PACKAGES = {"ducklake": ("duckdb_extension_ducklake", "duckdb-extension-ducklake"),
            "postgres_scanner": ("duckdb_extension_postgres_scanner", "duckdb-extension-postgres_scanner")}
#: libpq connection keywords (https://www.postgresql.org/docs/15/libpq-connect.html), for early checks
LIBPQ_KEYS = {
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "channel_binding", "connect_timeout",
    "client_encoding", "options", "application_name", "fallback_application_name", "keepalives",
    "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout", "replication",
    "gssencmode", "sslmode", "requiressl", "sslcompression", "sslcert", "sslkey", "sslpassword", "sslrootcert",
    "sslcrl", "sslcrldir", "sslsni", "requirepeer", "ssl_min_protocol_version", "ssl_max_protocol_version",
    "krbsrvname", "gsslib", "service", "target_session_attrs", "load_balance_hosts",
}
DEFAULT_CONNECT_TIMEOUT = "5"
CREATE_RETRIES = 10
_CREATE_RACE = ("already exists", "duplicate key value")
_CONFLICT = ("Transaction conflict", "Failed to commit DuckLake transaction", "could not serialize access",
             "duplicate key value violates unique constraint")


def hide_password(text: str) -> str:
    """``text`` with every libpq ``password=...`` value replaced by ``***``."""
    return re.sub(r"(password\s*=\s*)('[^']*'|[^\s\"]+)", r"\1***", text)


def is_lake(spec: object) -> bool:
    return isinstance(spec, LakeLocation) or str(spec).startswith(PREFIX)


def is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is DuckLake refusing a commit because another one changed the same data."""
    return isinstance(exc, duckdb.Error) and any(s in str(exc) for s in _CONFLICT)


class LakeLocation:
    """What ``Warehouse.path`` is for a lake: the catalog and the data folder.

    ``str()`` gives the ``ducklake:...`` string with any ``password=`` hidden; ``spec`` is the
    whole string. ``parent`` is the data folder, so artifacts (checkpoints) live beside the data.
    """

    def __init__(self, spec: str, data: str | os.PathLike | None = None):
        if not spec.startswith(PREFIX):
            raise LensError(f"Not a DuckLake warehouse: {spec!r} (expected ducklake:<catalog>)")
        self.spec = spec
        self.catalog = spec[len(PREFIX):].strip()
        self.data = str(data) if data not in (None, "") else None
        self.kind = "postgres" if self.catalog.startswith("postgres:") else "duckdb"
        self._check_catalog()

    # -- what it looks like -------------------------------------------------------------

    def __str__(self) -> str:
        return hide_password(self.spec)

    def __repr__(self) -> str:
        return f"LakeLocation({str(self)!r}, data={self.data!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LakeLocation) and (self.spec, self.data) == (other.spec, other.data)

    def __hash__(self) -> int:
        return hash((self.spec, self.data))

    @property
    def key(self) -> str:
        """Which lake this is within a process (the data folder is the catalog's to say)."""
        return self.spec

    @property
    def parent(self) -> Path:
        """The data folder (local lakes): checkpoints go to ``<data>/artifacts``."""
        if self.data is None or "://" in self.data:
            raise LensError(f"The lake {self} has no local data folder for artifacts: pass --lake-data DIR "
                            f"(or set {ENV_LAKE_DATA}) naming a folder every machine mounts.")
        return Path(self.data)

    def resolve(self) -> "LakeLocation":
        return self

    def exists(self) -> bool:
        return True

    # -- checks before anything is opened ------------------------------------------------

    def _check_catalog(self) -> None:
        fix = ("use ducklake:postgres:dbname=NAME host=HOST user=USER (libpq key=value pairs) "
               "or ducklake:PATH.ducklake")
        if not self.catalog:
            raise LensError(f"The warehouse {self.spec!r} names no DuckLake catalog: {fix}.")
        if self.kind == "postgres":
            self.params = _libpq_pairs(self.catalog[len("postgres:"):], self.spec)
            unknown = sorted(set(self.params) - LIBPQ_KEYS)
            if unknown:
                raise LensError(f"The DuckLake catalog {self} has unknown PostgreSQL connection option(s) "
                                f"{', '.join(unknown)}: {fix}.")
            if "dbname" not in self.params:
                raise LensError(f"The DuckLake catalog {self} names no database: add dbname=NAME.")
            return
        m = re.match(r"^([a-z_]+):", self.catalog)
        if m and m.group(1) in {"sqlite", "mysql", "md", "motherduck"}:
            raise LensError(f"DuckLake catalogs on {m.group(1)} are not supported by Lens (no packaged extension): "
                            f"{fix}.")
        folder = Path(self.catalog).expanduser().resolve().parent
        if not folder.is_dir():
            raise LensError(f"The folder of the DuckLake catalog file {self.catalog} does not exist: create "
                            f"{folder} or {fix}.")

    def attach_string(self) -> str:
        """The catalog as ATTACH takes it, with a connect timeout so an unreachable host fails fast."""
        if self.kind == "postgres" and "connect_timeout" not in self.params:
            return f"{PREFIX}{self.catalog} connect_timeout={DEFAULT_CONNECT_TIMEOUT}"
        if self.kind == "duckdb":
            return PREFIX + str(Path(self.catalog).expanduser())
        return self.spec

    def check_data_writable(self) -> None:
        """A local data folder must exist (it is created) and take files; one line if not."""
        if self.data is None or "://" in self.data:
            return
        path = Path(self.data).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".lens-write-check-"):
                pass
        except OSError as exc:
            raise LensError(f"The lake's data folder {path} is not writable ({exc.strerror or exc}): pass "
                            f"--lake-data DIR (or set {ENV_LAKE_DATA}) naming a folder this user can write.") from None


def _libpq_pairs(text: str, spec: str) -> dict[str, str]:
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise LensError(f"The DuckLake catalog {spec!r} cannot be read ({exc}): write it as "
                        "ducklake:postgres:dbname=NAME host=HOST user=USER.") from None
    out = {}
    for w in words:
        if "=" not in w:
            raise LensError(f"The DuckLake catalog has {w!r} where a key=value pair belongs: write it as "
                            "ducklake:postgres:dbname=NAME host=HOST user=USER.")
        k, v = w.split("=", 1)
        out[k.strip()] = v
    return out


def extension_path(name: str) -> Path:
    """The extension file shipped by its PyPI package for this duckdb, or a LensError saying what to install."""
    module, package = PACKAGES[name]
    hint = (f"DuckLake warehouses need the PyPI package {package}=={duckdb.__version__} "
            f"(pip install 'lens-error-analysis[lake]' or pip install {package}=={duckdb.__version__}); "
            "Lens never downloads DuckDB extensions at run time.")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LensError(f"{package} is not installed. {hint}")
    path = Path(spec.origin).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.is_file():
        raise LensError(f"{package} has no extension for duckdb {duckdb.__version__} ({path} is missing). {hint}")
    return path


class CatalogLockedError(LensError):
    """A local catalog file is held by another process (DuckDB's file lock)."""


def _explain_attach_error(loc: LakeLocation, exc: duckdb.Error) -> LensError:
    text = str(exc)
    if "Could not set lock" in text or "Conflicting lock" in text:
        return CatalogLockedError(f"The lake's catalog file {loc.catalog} is held by another process: {text}")
    m = re.search(r'Unable to connect to Postgres at "[^"]*": (.*)', text, re.S)
    if m:
        reason = " ".join(m.group(1).split()).replace("\tIs the server", " Is the server")
        where = f"{loc.params.get('host', 'localhost')}:{loc.params.get('port', '5432')}"
        return LensError(f"Cannot open the lake's PostgreSQL catalog at {where} (database "
                         f"{loc.params.get('dbname')!r}): {reason}. Start PostgreSQL there or fix host=, port=, "
                         f"dbname=, user= in --warehouse (password in PGPASSWORD or ~/.pgpass).")
    if "data_path is not set" in text:
        return LensError(f"The lake {loc} does not exist yet: pass --lake-data DIR (or set {ENV_LAKE_DATA}) "
                         f"to create it with its Parquet files in DIR.")
    first = hide_password(" ".join(text.split()))
    return LensError(f"Cannot open the lake {loc}: {first}")


def attach(loc: LakeLocation, *, read_only: bool = False, sandbox: bool = False) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB instance with the lake attached as ``lens_lake`` and ``USE``d.

    ``sandbox`` (read-only): afterwards the connection reads the lake's catalog and data files
    and nothing else (no other file, no network, no setting changes).
    """
    if sandbox and not read_only:
        raise ValueError("a sandboxed connection is read-only")
    paths = [extension_path("ducklake")]
    if loc.kind == "postgres":
        paths.append(extension_path("postgres_scanner"))
    if not read_only:
        loc.check_data_writable()
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        for p in paths:
            con.load_extension(str(p))
        statement = f"attach {_literal(loc.attach_string())} as lens_lake{_attach_options(loc, read_only)}"
        for attempt in range(CREATE_RETRIES + 1):
            try:
                con.execute(statement)
                break
            except duckdb.Error as exc:
                # two processes creating one new lake at once: the loser's CREATEs collide in
                # PostgreSQL; the lake exists now, so attaching again finds it
                if attempt < CREATE_RETRIES and any(s in str(exc) for s in _CREATE_RACE):
                    time.sleep(0.1 * (attempt + 1) * random.uniform(0.5, 1.5))
                    continue
                raise _explain_attach_error(loc, exc) from None
        con.execute("use lens_lake")
        if loc.data is None:  # learn it from the catalog: artifacts go beside the data
            row = con.execute("select value from __ducklake_metadata_lens_lake.ducklake_metadata"
                              " where key = 'data_path'").fetchone()
            if row:
                loc.data = row[0].rstrip("/") if "://" not in row[0] else row[0]
                if not read_only:
                    loc.check_data_writable()
        if sandbox:
            if loc.data and "://" not in loc.data:
                con.execute("set allowed_directories = ?", [[str(Path(loc.data).resolve()) + "/"]])
            con.execute("set enable_external_access = false")
            con.execute("set lock_configuration = true")
        return con
    except BaseException:
        con.close()
        raise


def _attach_options(loc: LakeLocation, read_only: bool) -> str:
    options = ["read_only"] if read_only else []
    if loc.data is not None:
        data = loc.data if "://" in loc.data else str(Path(loc.data).expanduser().resolve()) + "/"
        options.append(f"data_path {_literal(data)}")
    return f" ({', '.join(options)})" if options else ""


def _literal(value: str) -> str:
    """A quoted SQL string literal for ATTACH, which takes no parameters.

    Only the catalog string and data folder given by the user running the command pass here
    (the same user may run any SQL with ``lens sql --write``); no data from the warehouse does.
    """
    return "'" + value.replace("'", "''") + "'"
