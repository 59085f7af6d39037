"""Where backends are found: the built-ins, entry points of group ``lens.backends``, tests.

A package adds a backend by naming its class in an entry point (as ``llm`` finds model
plugins)::

    # the plugin's pyproject.toml
    [project.entry-points."lens.backends"]
    mine = "lens_mine:MineBackend"          # a Hypothesizer subclass whose name is "mine"
    mine-embedder = "lens_mine:MineEmbedder"  # or an Embedder subclass (made with no arguments)

A :class:`~lens.backends.base.Hypothesizer` becomes a ``--backend`` choice of ``lens
hypothesize`` (and ``lens run``), its options' flags are added to the command, and ``auto``
tries it when it has an ``auto_rank``; an :class:`~lens.backends.embedders.Embedder` becomes an
``--embedder`` name. The built-ins (:data:`BUILTIN`) are loaded the same way, from this table
(so a checkout works before it is installed); an entry point cannot replace one. A plugin that
fails to load is skipped with a warning naming it: Lens itself still runs.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import threading
from typing import Any

from lens.backends.base import BackendOptions, Hypothesizer, OptionSpec
from lens.errors import LensError

GROUP = "lens.backends"
#: the built-in hypothesis backends: name -> "module:Class" (the form of an entry point's value)
BUILTIN = {
    "ollama": "lens.backends.ollama_backend:OllamaBackend",
    "openai": "lens.backends.openai_backend:OpenAIBackend",
    "measured": "lens.backends.measured:MeasuredBackend",
    "import": "lens.backends.imported:ImportBackend",
}


def _skip(where: str, why: str) -> None:
    """A plugin that cannot be used: one line on stderr, and Lens goes on without it."""
    print(f"lens: {where} {why}; skipped", file=sys.stderr)


_lock = threading.RLock()
_hypothesizers: dict[str, type[Hypothesizer]] = {}
_embedders: dict[str, type] = {}
_loaded = False


def _load_target(value: str) -> Any:
    module, _, attr = value.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _adopt(name: str, obj: Any, where: str) -> None:
    from lens.backends.embedders import Embedder

    if isinstance(obj, type) and issubclass(obj, Hypothesizer):
        if getattr(obj, "name", None) != name:
            _skip(where, f"names its class {getattr(obj, 'name', None)!r}, not {name!r}")
            return
        _hypothesizers.setdefault(name, obj)
    elif isinstance(obj, type) and issubclass(obj, Embedder):
        _embedders.setdefault(name, obj)
    else:
        _skip(where, f"gives {obj!r}, neither a Hypothesizer nor an Embedder subclass")


def _load() -> None:
    """Load the built-ins and every entry point once per process."""
    global _loaded
    with _lock:
        if _loaded:
            return
        for name, value in BUILTIN.items():
            _hypothesizers.setdefault(name, _load_target(value))
        for ep in importlib.metadata.entry_points(group=GROUP):
            where = f"backend plugin {ep.name!r} ({ep.value}"
            where += f", package {ep.dist.name})" if ep.dist is not None else ")"
            if ep.name in BUILTIN:
                _skip(where, "takes the name of a built-in backend")
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not break Lens: say which, go on
                _skip(where, f"cannot be loaded: {type(exc).__name__}: {exc}")
                continue
            _adopt(ep.name, obj, where)
        _loaded = True


def add(cls: type[Hypothesizer]) -> type[Hypothesizer]:
    """Register a backend class in this process (what ``@register`` does)."""
    with _lock:
        _hypothesizers[cls.name] = cls
    return cls


def hypothesizers() -> dict[str, type[Hypothesizer]]:
    """Every hypothesis backend by name, sorted."""
    _load()
    return dict(sorted(_hypothesizers.items()))


def names() -> list[str]:
    return list(hypothesizers())


def get(name: str) -> type[Hypothesizer]:
    found = hypothesizers().get(name)
    if found is None:
        raise LensError(f"Unknown backend {name!r}; choose one of {', '.join(names())}")
    return found


def embedder(name: str) -> type | None:
    """The Embedder class a plugin registered under ``name``, or None."""
    _load()
    return _embedders.get(name)


def embedder_names() -> list[str]:
    _load()
    return sorted(_embedders)


def option_specs() -> list[tuple[str, OptionSpec, list[str]]]:
    """Every backend option once: (name, spec, the backends taking it), the first declaration's spec."""
    out: dict[str, tuple[OptionSpec, list[str]]] = {}
    for backend, cls in hypothesizers().items():
        for name, spec in cls.Options.specs():
            out.setdefault(name, (spec, []))[1].append(backend)
    return [(name, spec, users) for name, (spec, users) in out.items()]


def options_for(cls: type[Hypothesizer], values: dict[str, Any]) -> BackendOptions:
    """``cls``'s options among ``values`` (keyword -> value; None means not given)."""
    return cls.Options.from_values(values)


def auto_candidates() -> list[type[Hypothesizer]]:
    """The backends ``--backend auto`` tries, in order."""
    found = [c for c in hypothesizers().values() if c.auto_rank is not None]
    return sorted(found, key=lambda c: (c.auto_rank, c.name))


def choose_auto(values: dict[str, Any], model: str | None) -> tuple[str, str]:
    """``--backend auto``: (name, why): the first candidate whose probe says it is usable."""
    whys = []
    for cls in auto_candidates():
        usable, why = cls.probe(options_for(cls, values), model)
        whys.append(why)
        if usable:
            return cls.name, "; ".join(whys)
    raise LensError(f"--backend auto: no backend is usable ({'; '.join(whys) or 'none can be chosen'}).")
