"""The hypothesis-backend interface: one request per failure in, one answer out.

Backends know nothing of DuckDB: the ``hypothesize`` stage builds
:class:`HypothesisRequest` objects from the warehouse, hands them to a backend, and
stores the :class:`HypothesisAnswer` it gets back. Backends register by name::

    @register
    class MyBackend(Hypothesizer):
        name = "mine"
        def answer(self, request, prompt): ...

and are created with :func:`create` (``create("ollama", model="qwen3-vl:8b", ...)``).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lens.errors import LensError
from lens.prompts import DimensionAnswer, Prompt

STATUSES = ("ok", "invalid", "error")


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

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"bad status {self.status!r}")


class Hypothesizer(ABC):
    """A hypothesis backend. Subclasses set ``name`` and implement :meth:`answer`."""

    name: ClassVar[str]
    #: whether the backend needs the failure image (False for 'measured' and 'import')
    needs_image: ClassVar[bool] = True
    #: whether the backend needs request.evidence (the stage then requires `lens evidence` first)
    needs_evidence: ClassVar[bool] = False

    def __init__(self, *, model: str | None = None, **options: Any):
        self.model = model or self.default_model()
        self.options = options

    @classmethod
    def default_model(cls) -> str:
        return cls.name

    def check(self, prompt: Prompt) -> None:
        """Raise LensError with advice when the backend cannot serve (server down, model missing)."""

    @abstractmethod
    def answer(self, request: HypothesisRequest, prompt: Prompt) -> HypothesisAnswer:
        """Answer one request. Faults are returned as status 'invalid' / 'error', not raised."""

    def answer_batch(
        self,
        requests: Iterable[HypothesisRequest],
        prompt: Prompt,
        *,
        concurrency: int = 1,
    ) -> Iterator[tuple[HypothesisRequest, HypothesisAnswer]]:
        """Answer requests with up to ``concurrency`` in flight; yields in completion order."""
        if concurrency <= 1:
            for req in requests:
                yield req, self._safe_answer(req, prompt)
            return
        pending: dict[Future, HypothesisRequest] = {}
        it = iter(requests)
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"lens-{self.name}") as pool:
            for req in it:
                pending[pool.submit(self._safe_answer, req, prompt)] = req
                if len(pending) >= concurrency:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    req = pending.pop(fut)
                    yield req, fut.result()
                    nxt = next(it, None)
                    if nxt is not None:
                        pending[pool.submit(self._safe_answer, nxt, prompt)] = nxt

    def _safe_answer(self, request: HypothesisRequest, prompt: Prompt) -> HypothesisAnswer:
        start = time.perf_counter()
        try:
            return self.answer(request, prompt)
        except LensError:
            raise
        except Exception as exc:  # a backend bug must not stop the stage: record it
            return HypothesisAnswer(
                status="error", error=f"{type(exc).__name__}: {exc}", latency_s=time.perf_counter() - start
            )


_REGISTRY: dict[str, type[Hypothesizer]] = {}
# Modules that register the built-in backends when imported (lazily: they import clients).
_BUILTIN_MODULES = {
    "ollama": "lens.backends.ollama_backend",
    "openai": "lens.backends.openai_backend",
    "measured": "lens.backends.measured",
    "import": "lens.backends.imported",
}


def register(cls: type[Hypothesizer]) -> type[Hypothesizer]:
    """Class decorator: make a backend available by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def backend_names() -> list[str]:
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))


def get(name: str) -> type[Hypothesizer]:
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        import importlib

        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _REGISTRY:
        raise LensError(f"Unknown backend {name!r}; choose one of {', '.join(backend_names())}")
    return _REGISTRY[name]


def create(name: str, **options: Any) -> Hypothesizer:
    """Create a backend by name with its options (model=..., host=..., timeout=...)."""
    return get(name)(**options)


ProgressCallback = Callable[[HypothesisRequest, HypothesisAnswer], None]
