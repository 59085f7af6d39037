"""The ``ollama`` backend: a local vision-language model served by Ollama.

Uses the official ``ollama`` client against ``--ollama-host`` (``OLLAMA_HOST``, default
``http://127.0.0.1:11434``). Each failure is one ``/api/chat`` request with

* the system text and the JSON schema of the prompt (also sent as ``format`` for
  structured output), ``think=False`` (any ``<think>`` block in the reply is stripped
  anyway), ``temperature`` 0.1;
* the image as PNG, upscaled so its longer side is ``--image-size`` px (default 128; a
  CIFAR 32 px image is too small for most VLMs), bicubic or nearest.

To serve several requests at once start Ollama with ``OLLAMA_NUM_PARALLEL=N`` and run
``lens hypothesize --concurrency N``. Faults follow :mod:`lens.backends.chat`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

from lens.backends.base import option
from lens.backends.chat import BadReply, ChatBackend, ChatOptions, prompt_schema
from lens.errors import LensError
from lens.prompts import Prompt

DEFAULT_MODEL = "qwen3-vl:8b"
DEFAULT_HOST = "http://127.0.0.1:11434"
CHECK_TIMEOUT = 10.0


def resolve_host(host: str | None) -> str:
    """The Ollama URL: ``host``, else ``$OLLAMA_HOST``, else the default; always with a scheme."""
    raw = (host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST).strip().rstrip("/")
    if "://" not in raw:
        raw = "http://" + raw
    if raw.count(":") == 1:  # no port
        raw += ":11434"
    return raw


def _model_names(listing) -> set[str]:
    names = set()
    for m in listing.models:
        for n in (getattr(m, "model", None), getattr(m, "name", None)):
            if n:
                names.add(n)
                if n.endswith(":latest"):
                    names.add(n[: -len(":latest")])
    return names


@functools.cache
def _tls_context():
    """httpx's default TLS context (certifi, SSL_CERT_FILE / SSL_CERT_DIR), made once per process:
    each ``httpx.Client`` would otherwise load the CA bundle again (~50 ms), once per server of a pool."""
    import httpx

    return httpx.create_ssl_context()


@dataclass(frozen=True)
class OllamaOptions(ChatOptions):
    ollama_host: str | None = option(
        "--ollama-host", f"Ollama URL (default {DEFAULT_HOST}). Several servers: repeat it or separate by commas; "
        "URL=N gives a server N parallel requests (default --concurrency). Env: OLLAMA_HOST.",
        multiple=True, envvar="OLLAMA_HOST")


class OllamaBackend(ChatBackend):
    """Ask a vision-language model served by Ollama (see the module docstring)."""

    name = "ollama"
    Options = OllamaOptions
    server_option = "ollama_host"
    auto_rank = 0  # `--backend auto`: Ollama first, when it has the model
    png_compress_level = 0  # Ollama is usually local: skip zlib, bytes are cheap on loopback
    client_module = "ollama"  # ~0.5 s to import (httpx, pydantic models)

    def __init__(self, options: OllamaOptions | None = None, **kw: Any):
        super().__init__(options, **kw)
        self.host = resolve_host(self.options.ollama_host)
        self._think_supported = True

    def make_client(self, library):
        """An ``ollama.Client``; connecting gets at most 10 s."""
        import httpx

        return library.Client(host=self.host, verify=_tls_context(),
                              timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, CHECK_TIMEOUT)))

    @classmethod
    def default_model(cls) -> str:
        return DEFAULT_MODEL

    # -- availability --------------------------------------------------------------------

    @classmethod
    def probe(cls, options: OllamaOptions, model: str | None, timeout: float = 3.0) -> tuple[bool, str]:
        """(usable, why): whether Ollama (the first server named) answers and has ``model`` pulled."""
        import ollama

        from lens.backends.pool import first_server

        url = resolve_host(first_server(options.ollama_host))
        model = model or DEFAULT_MODEL
        try:
            listing = ollama.Client(host=url, timeout=timeout, verify=_tls_context()).list()
        except Exception as exc:  # any failure to talk to it means: not usable
            return False, f"Ollama is not reachable at {url} ({type(exc).__name__})"
        if model not in _model_names(listing):
            return False, f"Ollama at {url} does not have {model} (`ollama pull {model}`)"
        return True, f"Ollama at {url} has {model}"

    def check(self, prompt: Prompt) -> None:
        client = self.client
        try:
            listing = client.list()
        except Exception as exc:
            raise LensError(
                f"Ollama is not reachable at {self.host}: start it with `ollama serve` "
                f"(or set --ollama-host / OLLAMA_HOST), or use --backend measured. ({type(exc).__name__}: {exc})"
            ) from exc
        names = _model_names(listing)
        if self.model not in names:
            have = ", ".join(sorted(names)) or "none"
            raise LensError(
                f"Ollama at {self.host} does not have the model {self.model!r}: run `ollama pull {self.model}` "
                f"(or pick one with --model; pulled: {have})."
            )
        try:
            info = client.show(self.model)
        except Exception as exc:
            raise LensError(f"Ollama at {self.host} cannot describe {self.model!r}: {exc}") from exc
        caps = getattr(info, "capabilities", None)
        if caps is not None and "vision" not in caps:
            raise LensError(
                f"The Ollama model {self.model!r} cannot see images (its capabilities: {', '.join(caps) or 'none'}). "
                f"Use a vision model, e.g. --model {DEFAULT_MODEL}."
            )

    # -- one request -----------------------------------------------------------------------

    def send(self, messages: list[dict[str, Any]], prompt: Prompt, image_png: bytes | None) -> str:
        msgs = [dict(m) for m in messages]
        if image_png is not None:
            first_user = next(i for i, m in enumerate(msgs) if m["role"] == "user")
            msgs[first_user]["images"] = [image_png]
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": msgs,
            "format": prompt_schema(prompt),
            "options": {"temperature": self.temperature},
        }
        if self._think_supported:
            kwargs["think"] = False
        try:
            response = self.client.chat(**kwargs)
        except ValueError as exc:  # the body is not JSON (json.JSONDecodeError): an HTML page, ...
            start = getattr(exc, "doc", None) or str(exc)  # JSONDecodeError: the body; pydantic: what is wrong
            raise BadReply(f"the reply is not Ollama's chat JSON: {start[:120]!r}") from exc
        except self.library.ResponseError as exc:
            # Some models reject the think flag altogether: drop it once and remember.
            if self._think_supported and exc.status_code == 400 and "think" in str(exc.error).lower():
                self._think_supported = False
                kwargs.pop("think", None)
                response = self.client.chat(**kwargs)
            else:
                raise
        return response.message.content or ""

    def classify(self, exc: Exception) -> tuple[bool, str]:
        import httpx

        if isinstance(exc, self.library.ResponseError):
            code = exc.status_code
            text = f"HTTP {code} from Ollama: {str(exc.error)[:300]}"
            return (code >= 500 or code == 429 or code == -1), text
        if isinstance(exc, httpx.TimeoutException):
            return True, f"timeout after {self.timeout:g}s ({type(exc).__name__})"
        if isinstance(exc, (ConnectionError, httpx.TransportError)):
            return True, f"connection failed: {type(exc).__name__}: {exc}"
        return False, f"{type(exc).__name__}: {exc}"
