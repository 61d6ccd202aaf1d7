"""A cache of chat-model answers, in memory and (optionally) in a JSONL file under the run's directory.

The simulated customer and the LLM judge ask the same question again whenever a conversation repeats:
an evaluation of unchanged weights with the same seeds, a resumed run, a retried iteration. Answering
from the cache makes those repeats identical (a server's sampling can differ between runs, batches or
versions even with a seed) and free.

A key is the SHA-256 of everything that decides the answer, as canonical JSON: the caller passes
the model, the messages, the seed, the sampling settings and whatever else it wants in the key
(the scenario id for the customer). A file holds one ``{"key": ..., "text": ...}`` object per line,
appended and flushed as answers arrive (a crash loses at most the line being written; a torn last
line is ignored on load). Under several processes each rank writes its own file
(``NAME.rankN.jsonl``) and reads every ``NAME*.jsonl`` when it starts.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

__all__ = ["ChatCache", "CachedChat", "cache_key"]


def cache_key(**parts: Any) -> str:
    """SHA-256 of `parts` as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ChatCache:
    """`get(key)` / `put(key, text)`; `path` None keeps it in memory only."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, str] = {}
        self._lock = threading.Lock()
        if self.path is not None:
            self._load()

    def _load(self) -> None:
        stem = self.path.name.split(".")[0]
        for file in sorted(self.path.parent.glob(f"{stem}*.jsonl")):
            for line in file.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self._entries[str(entry["key"])] = str(entry["text"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line torn by a crash mid-write

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> str | None:
        return self._entries.get(key)

    def put(self, key: str, text: str) -> None:
        with self._lock:
            if self._entries.get(key) == text:
                return
            self._entries[key] = text
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"key": key, "text": text}, ensure_ascii=False) + "\n")


class CachedChat:
    """A chat model behind a `ChatCache`, with fixed sampling settings and counters.

    An answer is cached when it is reproducible: sampled with a seed, or greedy (temperature 0).
    `requests` counts calls that went to the model, `cache_hits` answers from the cache, `failures`
    calls that raised (the model's error propagates: the caller decides what a failure means).
    """

    def __init__(self, model, cache: ChatCache, *, temperature: float, max_tokens: int, kind: str) -> None:
        self.model = model
        self.cache = cache
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.kind = kind
        self.requests = self.cache_hits = self.failures = 0

    def counters(self) -> dict[str, int]:
        return {"requests": self.requests, "cache_hits": self.cache_hits, "failures": self.failures}

    async def ask(self, messages: list[dict[str, Any]], *, seed: int | None = None, **key_parts: Any) -> str:
        """The model's reply to `messages`; `key_parts` (e.g. a scenario id) go into the cache key."""
        cacheable = seed is not None or self.temperature == 0
        key = cache_key(kind=self.kind, model=self.model.model_id, messages=messages, seed=seed,
                        temperature=self.temperature, max_tokens=self.max_tokens, **key_parts)
        if cacheable:
            hit = self.cache.get(key)
            if hit is not None:
                self.cache_hits += 1
                return hit
        self.requests += 1
        try:
            text = await self.model.complete(messages, temperature=self.temperature, max_tokens=self.max_tokens,
                                             seed=seed)
        except Exception:
            self.failures += 1
            raise
        if cacheable:
            self.cache.put(key, text)
        return text
