"""What the chat backends (``ollama``, ``openai``) share: image preparation, messages,
retries with backoff, and the one repair attempt.

A subclass implements :meth:`ChatBackend.send` (one HTTP request -> the reply text) and
:meth:`ChatBackend.classify` (an exception -> 'transient' or 'fatal'). Per request:

* transport faults (connection refused or dropped, timeouts, HTTP 5xx / 429) are retried
  up to ``retries`` attempts in all, sleeping ``retry_backoff * 2**i`` seconds between
  them; then the answer is stored with status ``error``;
* a reply that is not JSON, or JSON that breaks the prompt's schema, gets one repair
  request (the conversation so far plus the validation error); if that is still unusable
  the answer is stored as ``invalid`` with both errors;
* a reply that is not the API's JSON at all (an HTML page from a proxy, a truncated
  body) is a transport fault like the others: retried, then ``error`` with its start;
* a reply over ``MAX_REPLY_CHARS`` characters (a runaway generation, a misrouted download)
  is not parsed and gets no repair request (that would send it back): ``invalid``, with
  only its first ``KEPT_CHARS`` characters kept in ``raw_response``;
* a reply with characters that cannot be stored (a lone UTF-16 surrogate, ``"\\ud800"`` in
  the JSON) is repaired as soon as it arrives (:func:`lens.backends.base.clean_text`), so
  that it parses, can be sent back in a repair turn and stored; the repair is recorded;
* ``attempts`` counts every request sent, ``latency_s`` the seconds spent waiting on them.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import threading
import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from lens.backends.base import (
    KEPT_CHARS,
    MAX_ANSWER_CHARS,
    BackendOptions,
    HypothesisAnswer,
    HypothesisRequest,
    Hypothesizer,
    UnanswerableRequest,
    clean_text,
    option,
    oversized,
)
from lens.backends.parsing import parse_answer
from lens.errors import LensError
from lens.prompts import AnswerError, Prompt

DEFAULT_IMAGE_SIZE = 128
DEFAULT_TIMEOUT = 120.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 1.0
RESAMPLE = ("bicubic", "nearest")
#: longest reply parsed (the limit of every backend, :data:`lens.backends.base.MAX_ANSWER_CHARS`)
MAX_REPLY_CHARS = MAX_ANSWER_CHARS
__all__ = ["KEPT_CHARS", "MAX_REPLY_CHARS", "BadReply", "ChatBackend", "ChatOptions", "TransportError", "oversized",
           "prepare_image", "prompt_schema", "repair_message", "system_message"]


@dataclass(frozen=True)
class ChatOptions(BackendOptions):
    """The options of every chat backend (a subclass adds where its server is)."""

    timeout: float | None = option("--timeout", f"Seconds per request (default {DEFAULT_TIMEOUT:g}).",
                                   kind=float, minimum=0, min_open=True)
    image_size: int | None = option("--image-size", "Upscale images to this many px on the longer side "
                                    f"(default {DEFAULT_IMAGE_SIZE}).", kind=int, minimum=1)
    resample: str | None = option("--resample", "Upscaling filter (default bicubic).", choices=RESAMPLE)


@dataclass(frozen=True)
class Prepared:
    """A chat request made ready before a slot frees: its messages and the image as sent."""

    messages: list[dict[str, Any]]
    image: Any


def prepare_image(png: bytes, size: int = DEFAULT_IMAGE_SIZE, resample: str = "bicubic", *,
                  compress_level: int = 1) -> bytes:
    """PNG bytes with the longer side upscaled to ``size`` px (images already that big are kept).

    ``compress_level`` 0-9 trades CPU for bytes (0: stored, fastest; the PNG is lossless anyway).
    """
    from PIL import Image

    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {RESAMPLE}, got {resample!r}")
    with Image.open(io.BytesIO(png)) as img:
        w, h = img.size
        if max(w, h) >= size or size <= 0:
            return png
        scale = size / max(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        method = Image.Resampling.NEAREST if resample == "nearest" else Image.Resampling.BICUBIC
        out = img.convert("RGB").resize(new, method)
    buf = io.BytesIO()
    out.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


@functools.cache
def import_in_background(module: str) -> threading.Thread:
    """Start importing a client library (``ollama``, ``openai``: 0.5-1 s each) in a thread, once
    per process, so the stage reads the warehouse meanwhile; the backend imports it again where
    it makes its client, which waits for this import (the import lock) or reports its error."""
    def load() -> None:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: S110 - reported by the import where the client is made
            pass

    thread = threading.Thread(target=load, name=f"lens-import-{module}", daemon=True)
    thread.start()
    return thread


def client_library(module: str):
    """``import module`` for a backend's client, or a LensError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise LensError(f"The {module!r} package is not installed here ({exc}): pip install {module}") from exc


@functools.lru_cache(maxsize=32)
def prompt_schema(prompt: Prompt) -> dict[str, Any]:
    """``prompt.json_schema()``, computed once per prompt (treat the result as read-only)."""
    return prompt.json_schema()


@functools.lru_cache(maxsize=32)
def system_message(prompt: Prompt) -> str:
    """The prompt's system text plus the JSON schema the answer must match."""
    schema = json.dumps(prompt_schema(prompt), separators=(",", ":"))
    parts = [prompt.system] if prompt.system else []
    parts.append(f"Reply with one JSON object that matches this JSON schema, and nothing else:\n{schema}")
    return "\n\n".join(parts)


def repair_message(error: str) -> str:
    return (
        f"Your answer could not be used: {error}. Reply again with only the JSON object, "
        "matching the schema exactly (every required key, tags from the allowed list)."
    )


class TransportError(Exception):
    """A request that did not produce a reply (after classification by the backend)."""


class BadReply(Exception):
    """The server answered, but not with the API's JSON (raised by a backend's ``send``).

    Retried like a transport fault; its text is the stored error.
    """


class ChatBackend(Hypothesizer):
    """Base of the HTTP chat backends; see the module docstring for the fault policy.

    Tuning keywords (``backend_options`` of the stage, no flags): ``temperature``,
    ``retries``, ``retry_backoff``.
    """

    Options = ChatOptions
    #: zlib level of the upscaled PNG: a local server wants speed, a remote one fewer bytes
    png_compress_level: int = 1
    #: the client library (``ollama``, ``openai``): imported in the background from ``__init__``,
    #: its client made by :meth:`make_client` on first use of :attr:`client`
    client_module: str | None = None

    def __init__(
        self,
        options: ChatOptions | None = None,
        *,
        model: str | None = None,
        temperature: float = 0.1,
        retries: int = DEFAULT_RETRIES,
        retry_backoff: float = DEFAULT_BACKOFF,
    ):
        super().__init__(options, model=model)
        opts = self.options
        self.timeout = float(opts.timeout) if opts.timeout else DEFAULT_TIMEOUT
        self.image_size = int(opts.image_size) if opts.image_size else DEFAULT_IMAGE_SIZE
        self.resample = opts.resample or "bicubic"
        if self.resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {RESAMPLE}")
        self.temperature = temperature
        self.retries = max(1, int(retries))
        self.retry_backoff = float(retry_backoff)
        self._client = None
        self._client_lock = threading.Lock()
        if self.client_module:
            import_in_background(self.client_module)  # while the stage reads the warehouse

    @property
    def library(self):
        """The client library module (a LensError saying how to install it when it is missing)."""
        return client_library(self.client_module)

    @property
    def client(self):
        """The library's client, made once on first use (its connection pool serves all threads)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self.make_client(self.library)
        return self._client

    @client.setter
    def client(self, value) -> None:  # a subclass may make its client itself, in __init__
        self._client = value

    def make_client(self, library) -> Any:
        """The client of ``library`` for this backend's server (a subclass with ``client_module``)."""
        raise NotImplementedError

    # -- to implement --------------------------------------------------------------------

    @abstractmethod
    def send(self, messages: list[dict[str, Any]], prompt: Prompt, image_png: bytes | None) -> str:
        """Send one chat request; return the reply text. Raise on any transport fault."""

    @abstractmethod
    def classify(self, exc: Exception) -> tuple[bool, str]:
        """(transient?, message) for an exception raised by :meth:`send`."""

    # -- the request loop ------------------------------------------------------------------

    def messages(self, request: HypothesisRequest, prompt: Prompt) -> list[dict[str, Any]]:
        return [
            {"role": "system", "content": system_message(prompt)},
            {"role": "user", "content": request.render(prompt)},
        ]

    def _send_with_retries(self, messages, prompt, image) -> tuple[str | None, str | None, int, float]:
        """(reply, error, attempts, seconds waiting)."""
        waited = 0.0
        last = "no attempt made"
        for attempt in range(1, self.retries + 1):
            start = time.perf_counter()
            try:
                text = self.send(messages, prompt, image)
                return text, None, attempt, waited + time.perf_counter() - start
            except Exception as exc:  # classified below; unknown ones are fatal
                waited += time.perf_counter() - start
                transient, last = (True, str(exc)) if isinstance(exc, BadReply) else self.classify(exc)
                if not transient:
                    return None, last, attempt, waited
            if attempt < self.retries:
                time.sleep(self.retry_backoff * (2 ** (attempt - 1)))
        return None, f"{last} (after {self.retries} attempts)", self.retries, waited

    def prepare_image(self, request: HypothesisRequest) -> bytes | None:
        """The request's image as sent: upscaled to ``image_size``, PNG."""
        if request.image_png is None:
            return None
        return prepare_image(request.image_png, self.image_size, self.resample,
                             compress_level=self.png_compress_level)

    def encode_image(self, png: bytes) -> Any:
        """The prepared PNG in the form :meth:`send` takes (a subclass may encode it ahead)."""
        return png

    def prepare(self, request: HypothesisRequest, prompt: Prompt) -> Prepared:
        """The messages and the image, made while other requests are in flight."""
        try:
            png = self.prepare_image(request)
        except Exception as exc:  # an unreadable stored image: that request fails alone
            raise UnanswerableRequest(f"cannot read the stored image: {type(exc).__name__}: {exc}") from exc
        return Prepared(self.messages(request, prompt), None if png is None else self.encode_image(png))

    def answer(self, request: HypothesisRequest, prompt: Prompt) -> HypothesisAnswer:
        return self.answer_prepared(request, prompt, self.prepare(request, prompt))

    def answer_prepared(self, request: HypothesisRequest, prompt: Prompt, prepared: Prepared) -> HypothesisAnswer:
        repairs: list[str] = []
        ans = self._answer_once(prepared.messages, prompt, prepared.image, repairs)
        ans.repairs.extend(repairs)
        return ans

    def _send_clean(self, messages, prompt, image, repairs: list[str], which: str):
        """:meth:`_send_with_retries`, with the reply's unstorable characters repaired (and noted)."""
        text, err, attempts, waited = self._send_with_retries(messages, prompt, image)
        if text is not None and len(text) <= MAX_REPLY_CHARS:
            text, n = clean_text(text)
            if n:
                repairs.append(f"{n} lone UTF-16 surrogate{'s' if n != 1 else ''} (unstorable) "
                               f"replaced by U+FFFD in the {which}")
        return text, err, attempts, waited

    def _answer_once(self, messages: list[dict[str, Any]], prompt: Prompt, image: Any,
                     repairs: list[str]) -> HypothesisAnswer:
        text, err, attempts, waited = self._send_clean(messages, prompt, image, repairs, "reply")
        if text is None:
            return HypothesisAnswer(status="error", error=err, attempts=attempts, latency_s=waited)
        big = oversized(text)
        if big is not None:
            big.attempts, big.latency_s = attempts, waited
            return big
        try:
            dims, description = parse_answer(text, prompt)
            return HypothesisAnswer("ok", dims, description, text, latency_s=waited, attempts=attempts)
        except AnswerError as exc:
            first_error = str(exc)
        repair = [*messages, {"role": "assistant", "content": text},
                  {"role": "user", "content": repair_message(first_error)}]
        text2, err2, attempts2, waited2 = self._send_clean(repair, prompt, image, repairs, "repair reply")
        attempts += attempts2
        waited += waited2
        if text2 is None:
            return HypothesisAnswer(
                status="error", raw_response=text, attempts=attempts, latency_s=waited,
                error=f"invalid answer ({first_error}); the repair request failed: {err2}",
            )
        big = oversized(text2)
        if big is not None:
            big.attempts, big.latency_s = attempts, waited
            big.error = f"invalid answer ({first_error}); the repair reply: {big.error}"
            return big
        try:
            dims, description = parse_answer(text2, prompt)
            return HypothesisAnswer("ok", dims, description, text2, latency_s=waited, attempts=attempts)
        except AnswerError as exc:
            return HypothesisAnswer(
                status="invalid", raw_response=text2, attempts=attempts, latency_s=waited,
                error=f"{first_error}; after repair: {exc}",
            )
