"""The ``openai`` backend: any OpenAI-compatible chat endpoint that takes images.

vLLM, llama.cpp's server, LM Studio, or a hosted model, through the official ``openai``
client: ``--base-url`` (``OPENAI_BASE_URL``, default ``https://api.openai.com/v1``), the
API key from ``OPENAI_API_KEY`` or the variable named by ``--api-key-env`` (a local server
that needs none gets a placeholder), ``--model`` (default: the first model the server
lists at ``/models``, else ``gpt-4o-mini``).

The image goes as a ``data:image/png;base64,...`` URL. The answer is requested with
``response_format={"type": "json_schema", ...}``; a server that rejects that (HTTP 400
naming ``response_format``/``json_schema``) is asked with ``{"type": "json_object"}``,
then with no response format at all (the schema is always in the system message), and
the backend remembers what worked. The client's own retries are off: faults follow
:mod:`lens.backends.chat`.
"""

from __future__ import annotations

import base64
import os
import threading
from dataclasses import dataclass
from typing import Any

from lens.backends.base import option
from lens.backends.chat import BadReply, ChatBackend, ChatOptions, prompt_schema
from lens.errors import LensError
from lens.prompts import Prompt

DEFAULT_BASE_URL = "https://api.openai.com/v1"
FALLBACK_MODEL = "gpt-4o-mini"
PLACEHOLDER_KEY = "not-needed"
#: response formats, best first
FORMATS = ("json_schema", "json_object", "none")


@dataclass(frozen=True)
class OpenAIOptions(ChatOptions):
    base_url: str | None = option("--base-url", "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1; "
                                  "several like --ollama-host.", multiple=True)
    api_key_env: str | None = option("--api-key-env", "Environment variable holding the API key "
                                     "(default OPENAI_API_KEY).")


class OpenAIBackend(ChatBackend):
    """Ask a vision-language model behind an OpenAI-compatible API (see the module docstring)."""

    name = "openai"
    Options = OpenAIOptions
    server_option = "base_url"
    client_module = "openai"  # ~1 s to import

    def __init__(self, options: OpenAIOptions | None = None, **kw: Any):
        self._model_given = bool(kw.get("model"))
        super().__init__(options, **kw)
        base_url, api_key_env = self.options.base_url, self.options.api_key_env
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise LensError(f"--api-key-env {api_key_env}: that environment variable is not set")
        else:
            key = os.environ.get("OPENAI_API_KEY") or PLACEHOLDER_KEY
        self._key = key
        self._format = FORMATS[0]
        self._format_lock = threading.Lock()

    @classmethod
    def default_model(cls) -> str:
        return FALLBACK_MODEL

    def make_client(self, library):
        """An ``openai.OpenAI`` client (its own retries off: the backend retries)."""
        return library.OpenAI(base_url=self.base_url, api_key=self._key, timeout=self.timeout, max_retries=0)

    @property
    def response_format(self) -> str:
        """The response format in use: 'json_schema', 'json_object' or 'none'."""
        return self._format

    def check(self, prompt: Prompt) -> None:
        """Reach the server; without --model, take the first model it lists."""
        try:
            listing = self.client.with_options(timeout=min(self.timeout, 10.0)).models.list()
            ids = [m.id for m in listing.data]
        except self.library.APIConnectionError as exc:
            raise LensError(
                f"The OpenAI-compatible server is not reachable at {self.base_url}: start it or fix --base-url. ({exc})"
            ) from exc
        except self.library.AuthenticationError as exc:
            raise LensError(
                f"{self.base_url} refused the API key: set OPENAI_API_KEY or name a variable with --api-key-env."
            ) from exc
        except self.library.APIStatusError:
            return  # some servers have no /models; the first request will tell
        if not self._model_given and ids:
            self.model = ids[0]

    # -- one request -----------------------------------------------------------------------

    def encode_image(self, png: bytes) -> str:
        """The image as the data URL the request carries (made while other requests are in flight)."""
        return "data:image/png;base64," + base64.b64encode(png).decode("ascii")

    def _payload(self, messages: list[dict[str, Any]], url: str | None) -> list[dict[str, Any]]:
        out = []
        done = False
        for m in messages:
            if m["role"] == "user" and url is not None and not done:
                out.append({"role": "user", "content": [
                    {"type": "text", "text": m["content"]},
                    {"type": "image_url", "image_url": {"url": url}},
                ]})
                done = True
            else:
                out.append({"role": m["role"], "content": m["content"]})
        return out

    def _format_arg(self, fmt: str, prompt: Prompt) -> dict[str, Any] | None:
        if fmt == "json_schema":
            return {"type": "json_schema",
                    "json_schema": {"name": "lens_answer", "schema": prompt_schema(prompt), "strict": True}}
        if fmt == "json_object":
            return {"type": "json_object"}
        return None

    def send(self, messages: list[dict[str, Any]], prompt: Prompt, image: str | None) -> str:
        payload = self._payload(messages, image)
        while True:
            fmt = self._format
            kwargs: dict[str, Any] = {"model": self.model, "messages": payload, "temperature": self.temperature}
            rf = self._format_arg(fmt, prompt)
            if rf is not None:
                kwargs["response_format"] = rf
            try:
                response = self.client.chat.completions.create(**kwargs)
            except self.library.BadRequestError as exc:
                text = str(exc).lower()
                if fmt != "none" and ("response_format" in text or "json_schema" in text or "json_object" in text):
                    with self._format_lock:  # remember the downgrade for every later request
                        if self._format == fmt:
                            self._format = FORMATS[FORMATS.index(fmt) + 1]
                    continue
                raise
            if isinstance(response, str):  # the client hands over a non-JSON body as text
                raise BadReply(f"the reply is not the OpenAI API's JSON: {response[:120]!r}")
            if not response.choices:
                raise ValueError("the server returned no choices")
            return response.choices[0].message.content or ""

    def classify(self, exc: Exception) -> tuple[bool, str]:
        o = self.library
        if isinstance(exc, o.APITimeoutError):
            return True, f"timeout after {self.timeout:g}s"
        if isinstance(exc, o.APIConnectionError):
            cause = exc.__cause__
            why = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
            return True, f"connection failed: {exc}{why}"
        if isinstance(exc, o.APIStatusError):
            code = exc.status_code
            return (code >= 500 or code == 429), f"HTTP {code} from {self.base_url}: {str(exc)[:300]}"
        return False, f"{type(exc).__name__}: {exc}"
