"""An optional language-model summarizer behind an OpenAI-compatible endpoint.

Off by default: the offline summarizer (``ctxsvc.checkpoints``) always runs
first, and its state (anchored files and symbols, errors, facts) is what
checkpoints carry forward. When ``CTXSVC_SUMMARIZER_URL`` names a
``/v1/chat/completions`` endpoint (OpenAI, vLLM, llama.cpp, Ollama...), the
model rewrites the prose sections (goal, done, decisions, open tasks, next
step, errors, facts, notes) from that state and the tail of the transcript;
the files stay the offline anchors, and the result is cut to the budget by the
same renderer. Any failure (connection, timeout, HTTP error, a reply that is
not the JSON asked for) raises ``SummarizerFailed``; the caller then keeps the
offline summary and says why.

stdlib ``urllib`` on purpose: one small POST does not justify another owner of
an HTTP client library below the adapters.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from ctxsvc.errors import SummarizerFailed
from ctxsvc.records import Summary
from ctxsvc.transcripts import text_of

SECTIONS = ("constraints", "done", "decisions", "open_tasks", "errors", "facts", "notes")
MAX_ITEM_CHARS = 400
MAX_ITEMS = 40
TAIL_CHARS = 24_000  # the end of the transcript the model reads (about 6K tokens)
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.M)

PROMPT = """You write the checkpoint of a coding agent's session: what a fresh agent \
must know to continue after its context is lost. You get the state extracted so far \
(JSON) and the end of the transcript. Answer with one JSON object only, no prose, with \
these keys: "goal" (string), "constraints" (list: the user's requirements, what must or \
must not change, word for word), "done" (list of steps done), "decisions" (list: each \
decision with its reason), "open_tasks" (list), "next_step" (string), "errors" (list: \
failing commands and errors still open), "facts" (list: commands, ports, versions, \
names to remember), "notes" (list). Items are short (under 25 words), concrete, and name \
files and symbols exactly. Keep every constraint, explicit decision and open task of the state."""


class Summarizer(Protocol):
    """Rewrites the prose of an offline checkpoint state."""

    @property
    def name(self) -> str:
        """How checkpoints name it, e.g. ``llm:gpt-4o-mini``."""
        ...

    def summarize(self, state: Summary, messages: Sequence[Mapping[str, Any]]) -> Summary:
        """``state`` with its prose sections rewritten; ``files`` untouched."""
        ...


@dataclass(frozen=True)
class ChatSummarizer:
    """A model behind an OpenAI-compatible ``POST {url}/chat/completions``."""

    url: str  # the API base, e.g. http://localhost:11434/v1
    model: str
    api_key: str = ""
    timeout: float = 30.0

    @property
    def name(self) -> str:
        return f"llm:{self.model}"

    def summarize(self, state: Summary, messages: Sequence[Mapping[str, Any]]) -> Summary:
        internal = ("rendered", "dropped", "harness", "cwd")  # not the model's to write
        known = {k: v for k, v in asdict(state).items() if k not in internal}
        tail = "\n".join(f"{m.get('role')}: {text_of(m)}" for m in messages)[-TAIL_CHARS:]
        body = {
            "model": self.model,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": PROMPT},
                {
                    "role": "user",
                    "content": f"State:\n{json.dumps(known)}\n\nTranscript (end):\n{tail}",
                },
            ],
        }
        reply = self._post(body)
        try:
            content = reply["choices"][0]["message"]["content"]
            data = json.loads(_FENCE.sub("", content.strip()))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise SummarizerFailed(f"{self.name} answered something else than JSON: {exc}") from exc
        return merge(state, data, self.name)

    def _post(self, body: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.url.rstrip("/") + "/chat/completions",
            data=json.dumps(body).encode(),
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise SummarizerFailed(f"{self.name}: HTTP {exc.code} from {self.url}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise SummarizerFailed(f"{self.name}: {self.url} unreachable ({exc})") from exc
        except ValueError as exc:
            raise SummarizerFailed(f"{self.name}: the reply is not JSON ({exc})") from exc


def merge(state: Summary, data: object, name: str) -> Summary:
    """``state`` with the sections of a model's ``data`` (checked); files stay as they are."""
    if not isinstance(data, dict):
        raise SummarizerFailed(f"{name} answered a {type(data).__name__}, not a JSON object")
    changes: dict[str, Any] = {"summarizer": name}
    for key in ("goal", "next_step"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            changes[key] = value.strip()[:MAX_ITEM_CHARS]
    for key in SECTIONS:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SummarizerFailed(f"{name}: {key!r} must be a list of strings")
        changes[key] = tuple(v.strip()[:MAX_ITEM_CHARS] for v in value if v.strip())[:MAX_ITEMS]
    if len(changes) == 1:
        raise SummarizerFailed(f"{name} answered none of the sections asked for")
    return replace(state, **changes)
