"""The hypothesis-backend interface: one request per failure in, one answer out.

Backends know nothing of DuckDB: the ``hypothesize`` stage builds
:class:`HypothesisRequest` objects from the warehouse, hands them to a backend, and
stores the :class:`HypothesisAnswer` it gets back. A backend is a :class:`Hypothesizer`
subclass that declares its options (a :class:`BackendOptions` dataclass) and what it needs;
:mod:`lens.backends.registry` finds it (built-in, entry point ``lens.backends``, or
:func:`register` in tests) and :mod:`lens.backends.executor` runs its requests::

    @dataclass(frozen=True)
    class MineOptions(BackendOptions):
        mine_url: str | None = option("--mine-url", "Where Mine listens.")

    class MyBackend(Hypothesizer):
        name = "mine"
        Options = MineOptions
        def answer(self, request, prompt): ...

Created with :func:`create` (``create("ollama", model="qwen3-vl:8b", ollama_host=...)``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from lens.prompts import DimensionAnswer, Prompt

STATUSES = ("ok", "invalid", "error")
#: longest answer stored, for every backend: a reply or imported answer (``raw_response``), and
#: the parsed text (dimensions + description) of an ``ok`` one. A valid answer is a few KB (a
#: long ``<think>`` block tens of KB); more is a runaway generation or a misplaced file.
MAX_ANSWER_CHARS = 256 * 1024
#: characters of an oversized answer kept as its ``raw_response``
KEPT_CHARS = 4096
#: longest ``error`` text stored (a validation error may quote the offending value)
MAX_ERROR_CHARS = 4096
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class HypothesisRequest:
    """Everything a backend may use to explain one failure.

    ``evidence`` is the failure's row of the ``evidence`` table as a dict (column ->
    value, JSON columns decoded), or None when ``lens evidence`` has not run.
    """

    key: str  # hypothesis_id
    run_id: str
    example_id: int
    true_class: str
    pred_class: str
    true_prob: float | None
    confidence: float
    top3: list[tuple[str, float]]
    class_names: list[str]
    image_png: bytes | None = None
    evidence: dict[str, Any] | None = None
    #: the evidence as prompt text (lens.grounding.format_facts), for templates with {evidence}
    evidence_text: str = ""

    def render(self, prompt: Prompt) -> str:
        """The prompt's user message for this failure."""
        return prompt.render(
            true_class=self.true_class,
            pred_class=self.pred_class,
            true_prob=self.true_prob,
            confidence=self.confidence,
            top3=self.top3,
            evidence=self.evidence_text,
        )


@dataclass
class HypothesisAnswer:
    """What a backend returns for one request (never raises for a per-request fault)."""

    status: str  # 'ok' | 'invalid' | 'error'
    dimensions: dict[str, DimensionAnswer] = field(default_factory=dict)
    description: str | None = None
    raw_response: str | None = None
    error: str | None = None
    latency_s: float = 0.0
    attempts: int = 1
    #: repairs a backend made to the text it received (e.g. by :func:`clean_text`), stored in ``error``
    repairs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"bad status {self.status!r}")


# -- what may be stored ------------------------------------------------------------------------


def clean_text(text: str) -> tuple[str, int]:
    """``text`` as it can be stored (UTF-8), and how many characters were replaced.

    A lone UTF-16 surrogate (``"\\ud800"`` in a JSON string decodes to one) cannot be
    encoded as UTF-8: DuckDB, Arrow and every file writer refuse it. The halves of a valid
    pair are joined into their character; a lone half becomes U+FFFD (the replacement
    character) and is counted.
    """
    if not _SURROGATE.search(text):
        return text, 0
    lone = 0
    i, end = 0, len(text)
    while (m := _SURROGATE.search(text, i)) is not None:
        j = m.start()
        if text[j] <= "\udbff" and j + 1 < end and "\udc00" <= text[j + 1] <= "\udfff":
            i = j + 2  # a high half followed by a low half: one character
        else:
            lone += 1
            i = j + 1
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace"), lone


def oversized(text: str | None, *, what: str = "reply") -> HypothesisAnswer | None:
    """The ``invalid`` answer for a text over :data:`MAX_ANSWER_CHARS`, else None.

    Its ``raw_response`` keeps the first :data:`KEPT_CHARS` characters; nothing is parsed.
    """
    if text is None or len(text) <= MAX_ANSWER_CHARS:
        return None
    return HypothesisAnswer(
        status="invalid", raw_response=text[:KEPT_CHARS], attempts=0,
        error=(f"the {what} has {len(text):,} characters, over the {MAX_ANSWER_CHARS:,}-character limit "
               f"(a runaway generation?): not parsed, no repair asked; raw_response keeps its first "
               f"{KEPT_CHARS:,} characters"),
    )


def stored_answer(ans: HypothesisAnswer) -> HypothesisAnswer:
    """The answer as it is stored: every backend's output passes here (the hypothesize stage).

    * every text is made storable with :func:`clean_text`; each repair is recorded in
      ``error`` (for an ``ok`` answer that column then says what was repaired, nothing else);
    * an ``ok`` answer whose reply or parsed text is over :data:`MAX_ANSWER_CHARS` becomes
      ``invalid`` (a backend that checks the size itself, as the chat backends and import
      do, never gets here with one); an oversized ``raw_response`` of another answer keeps its
      first :data:`KEPT_CHARS` characters; ``error`` keeps :data:`MAX_ERROR_CHARS`.

    Never raises for odd text; returns ``ans`` itself when nothing needed changing.
    """
    repairs = list(ans.repairs)
    if ans.status == "ok":
        size = len(ans.description or "") + sum(
            len(d.text or "") + len(d.summary or "") + len(d.tag or "") for d in ans.dimensions.values())
        big = oversized(ans.raw_response)
        if big is None and size > MAX_ANSWER_CHARS:
            big = HypothesisAnswer(
                status="invalid", raw_response=(ans.raw_response or "")[:KEPT_CHARS],
                error=(f"the answer's text has {size:,} characters, over the {MAX_ANSWER_CHARS:,}-character "
                       f"limit: not stored as ok; raw_response keeps its first {KEPT_CHARS:,} characters"))
        if big is not None:
            ans = replace(ans, status="invalid", dimensions={}, description=None,
                          raw_response=big.raw_response, error=big.error)
    elif ans.raw_response is not None and len(ans.raw_response) > MAX_ANSWER_CHARS:
        repairs.append(f"raw_response cut from {len(ans.raw_response):,} to its first {KEPT_CHARS:,} characters")
        ans = replace(ans, raw_response=ans.raw_response[:KEPT_CHARS])

    fixed: dict[str, int] = {}

    def clean(value, where: str):
        if not isinstance(value, str):
            return value
        out, n = clean_text(value)
        if n:
            fixed[where] = fixed.get(where, 0) + n
        return out

    dims = {}
    for name, d in ans.dimensions.items():
        dims[name] = replace(d, text=clean(d.text, f"{name}.text"), tag=clean(d.tag, f"{name}.tag"),
                             summary=clean(d.summary, f"{name}.summary"))
    description = clean(ans.description, "description")
    raw = clean(ans.raw_response, "raw_response")
    error = clean(ans.error, "error")
    if fixed:
        n = sum(fixed.values())
        repairs.append(f"{n} lone UTF-16 surrogate{'s' if n != 1 else ''} (unstorable) replaced by U+FFFD in "
                       + ", ".join(fixed))
    if repairs:
        note = "repaired before storing: " + "; ".join(repairs)
        error = note if ans.status == "ok" or not error else f"{error}; {note}"
    if error is not None and len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS - 1] + "…"
    if (dims == ans.dimensions and description is ans.description and raw is ans.raw_response
            and error is ans.error and not ans.repairs):
        return ans
    return replace(ans, dimensions=dims, description=description, raw_response=raw, error=error, repairs=[])


# -- what a backend declares ------------------------------------------------------------------


@dataclass(frozen=True)
class OptionSpec:
    """How one backend option reaches the command line (``lens hypothesize``).

    ``kind`` is the value's type (str, int or float); ``minimum`` (exclusive when
    ``min_open``) and ``choices`` restrict it; a ``multiple`` option may be repeated, and its
    values reach the backend joined by commas; ``envvar`` is read when the flag is absent.
    """

    flag: str
    help: str
    kind: type = str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    min_open: bool = False
    multiple: bool = False
    envvar: str | None = None
    is_file: bool = False


def option(flag: str, help: str, **spec: Any) -> Any:
    """A field of a backend's :class:`BackendOptions`: None when not given, and its flag."""
    return field(default=None, metadata={"lens": OptionSpec(flag, help, **spec)})


@dataclass(frozen=True)
class BackendOptions:
    """A backend's options. Subclass it with fields made by :func:`option`.

    A field's name is the option's name everywhere: the click parameter, the keyword of
    ``lens.stages.hypothesize.run`` and of ``RunConfig``. Backends that share a name share
    the flag (``timeout`` for ``ollama`` and ``openai``).
    """

    @classmethod
    def specs(cls) -> list[tuple[str, OptionSpec]]:
        return [(f.name, f.metadata["lens"]) for f in fields(cls) if "lens" in f.metadata]

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> BackendOptions:
        """The options among ``values`` that this backend takes (None values dropped)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names and v is not None})


class UnanswerableRequest(Exception):
    """Raised by :meth:`Hypothesizer.prepare` for a request that cannot be sent (e.g. an unreadable
    stored image): stored as ``error`` with this text, never sent nor moved to another server."""


class Hypothesizer(ABC):
    """A hypothesis backend. Subclasses set ``name`` and implement :meth:`answer`.

    Class attributes declare what it needs (the stage and the CLI read them, never probing
    with ``hasattr``): ``Options`` (its :class:`BackendOptions`), ``needs_image``,
    ``needs_evidence``, ``server_option`` (the option that names its server; several
    servers there make a pool) and ``auto_rank`` (``--backend auto`` tries the backends that
    have one, lowest first, through :meth:`probe`).

    Requests are run by :mod:`lens.backends.executor`, which calls :meth:`prepare` ahead of
    time (while other requests are in flight) and :meth:`answer_prepared` when a slot frees.
    """

    name: ClassVar[str]
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    #: whether the backend needs the failure image (False for 'measured' and 'import')
    needs_image: ClassVar[bool] = True
    #: whether the backend needs request.evidence (the stage then requires `lens evidence` first)
    needs_evidence: ClassVar[bool] = False
    #: the field of ``Options`` naming the server(s) (``URL=N,URL``): several make a pool
    server_option: ClassVar[str | None] = None
    #: ``--backend auto`` tries the backends with a rank, lowest first (None: never chosen)
    auto_rank: ClassVar[int | None] = None

    def __init__(self, options: BackendOptions | None = None, *, model: str | None = None, **tuning: Any):
        self.options = options if options is not None else self.Options()
        self.model = model or self.default_model()
        self.tuning = tuning

    @classmethod
    def default_model(cls) -> str:
        return cls.name

    @classmethod
    def probe(cls, options: BackendOptions, model: str | None) -> tuple[bool, str]:
        """(usable, why) for ``--backend auto``: quick, never raises."""
        return True, f"the {cls.name} backend needs nothing to start"

    def check(self, prompt: Prompt) -> None:
        """Raise LensError with advice when the backend cannot serve (server down, model missing)."""

    def example_ids(self) -> set[int] | None:
        """The failures to answer when the backend picks them (``import``); None: the run's sample."""
        return None

    def prepare(self, request: HypothesisRequest, prompt: Prompt) -> Any:
        """Everything about a request that can be done before a slot frees (image, messages).

        Runs on the executor's preparing thread; raise :class:`UnanswerableRequest` for a
        request that cannot be sent.
        """
        return None

    def answer_prepared(self, request: HypothesisRequest, prompt: Prompt, prepared: Any) -> HypothesisAnswer:
        """Answer a request prepared by :meth:`prepare` (default: :meth:`answer`)."""
        return self.answer(request, prompt)

    @abstractmethod
    def answer(self, request: HypothesisRequest, prompt: Prompt) -> HypothesisAnswer:
        """Answer one request. Faults are returned as status 'invalid' / 'error', not raised."""


def register(cls: type[Hypothesizer]) -> type[Hypothesizer]:
    """Class decorator: make a backend available by its ``name`` in this process (tests).

    Packages register backends with an entry point instead (:mod:`lens.backends.registry`).
    """
    from lens.backends import registry

    return registry.add(cls)


def backend_names() -> list[str]:
    from lens.backends import registry

    return registry.names()


def get(name: str) -> type[Hypothesizer]:
    from lens.backends import registry

    return registry.get(name)


def create(name: str, *, model: str | None = None, **options: Any) -> Hypothesizer:
    """Create a backend by name: its options by field name, anything else as tuning (``retries=``)."""
    cls = get(name)
    names = {n for n, _ in cls.Options.specs()} | {f.name for f in fields(cls.Options)}
    given = {k: v for k, v in options.items() if k in names}
    tuning = {k: v for k, v in options.items() if k not in names}
    return cls(cls.Options.from_values(given), model=model, **tuning)
