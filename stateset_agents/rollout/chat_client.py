"""Chat models for the simulated customer and the LLM judge: an OpenAI-compatible endpoint or a local model.

Both implement `ChatModel`: ``await complete(messages, temperature=, max_tokens=, seed=) -> str`` (the
reply's visible text) and `model_id` (what cache keys name).

`OpenAIChatClient` talks to any ``/v1/chat/completions`` server (vLLM, SGLang, a hosted API) with
httpx, reusing the vLLM client's URL check, transport-error list and error-message helpers
(rollout/vllm_client.py). At most `concurrency` requests are in flight (a semaphore per event loop:
the trainer runs one loop per rollout step). A request that failed in a way that may pass (connection
refused or reset, a timeout, HTTP 429 or 5xx) is sent again after ``retry_backoff * 2**attempt``
seconds, up to `max_retries` times; a 4xx or a malformed answer is not retried. Every failure ends
as `ChatModelError`, whose message names the server and the last cause. The seed goes out with
every request (vLLM honours it per request), so a sampled reply is reproducible.

`LocalChatModel` runs a transformers model in this process through `rollout.agent.Agent` (seeded
sampling, Kimi thinking off so the whole budget is the visible reply); requests are served one at a
time in a worker thread. Fine for tests and small models; serve anything large with vLLM.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any, Protocol

import httpx

from stateset_agents.rollout.vllm_client import TRANSIENT_ERRORS, _normalise_url, _server_message

__all__ = ["ChatModel", "ChatModelError", "OpenAIChatClient", "LocalChatModel", "RETRY_STATUS"]

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses that say "try again later" (overload, a restarting server), not "this request is wrong"."""


class ChatModelError(RuntimeError):
    """A chat model could not answer (retries exhausted, or an answer that cannot be used)."""


class ChatModel(Protocol):
    model_id: str

    async def complete(self, messages: list[dict[str, Any]], *, temperature: float, max_tokens: int,
                       seed: int | None = None) -> str: ...


class OpenAIChatClient:
    """Chat completions from an OpenAI-compatible server (module docstring).

    `base_url`: "http://host:port" (a trailing /v1 is accepted). `model`: the model name to request;
    None = the first model the server lists at /v1/models (asked once).
    """

    def __init__(self, base_url: str, model: str | None = None, *, concurrency: int = 8, max_retries: int = 3,
                 retry_backoff: float = 0.5, timeout: float = 120.0, connect_timeout: float = 5.0) -> None:
        if concurrency < 1 or max_retries < 0 or retry_backoff < 0 or timeout <= 0:
            raise ValueError(f"need concurrency >= 1, max_retries >= 0, retry_backoff >= 0 and timeout > 0 (got "
                             f"{concurrency}, {max_retries}, {retry_backoff}, {timeout})")
        self.base_url = _normalise_url(base_url)
        self.model = model
        # fixed at creation (cache keys use it): the URL stands for the served model when none is named
        self.model_id = model or f"{self.base_url} (served model)"
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._semaphores: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


    async def complete(self, messages: list[dict[str, Any]], *, temperature: float, max_tokens: int,
                       seed: int | None = None) -> str:
        async with self._semaphore():
            model = self.model or await self._served_model()
            body: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature,
                                    "max_tokens": max_tokens, "n": 1, "stream": False}
            if seed is not None:
                body["seed"] = seed
            answer = await self._post("/v1/chat/completions", body)
        try:
            message = answer["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise ChatModelError(f"{self.base_url}/v1/chat/completions answered without choices[0].message: "
                                 f"{str(answer)[:200]}") from None
        return str(message.get("content") or "")  # reasoning (a parsed think block) is not the reply

    def _semaphore(self) -> asyncio.Semaphore:
        """The semaphore of the running event loop (an asyncio primitive cannot cross loops)."""
        loop = asyncio.get_running_loop()
        if loop not in self._semaphores:
            self._semaphores[loop] = asyncio.Semaphore(self.concurrency)
        return self._semaphores[loop]

    async def list_models(self) -> list[str]:
        """The model names the server serves (/v1/models); `ChatModelError` when it cannot be asked."""
        listing = await self._send("GET", "/v1/models", None)
        return [str(entry["id"]) for entry in listing.get("data", []) if isinstance(entry, dict) and entry.get("id")]

    async def _served_model(self) -> str:
        names = await self.list_models()
        if not names:
            raise ChatModelError(f"{self.base_url}/v1/models lists no model; pass the model name explicitly")
        self.model = self.model or str(names[0])
        return self.model

    async def _post(self, path: str, body: dict[str, Any]) -> dict:
        return await self._send("POST", path, body)

    async def _send(self, method: str, path: str, body: dict | None) -> dict:
        """One JSON request, retried while the failure may pass (module docstring)."""
        url = self.base_url + path
        failures: list[str] = []
        while True:
            try:
                async with httpx.AsyncClient(timeout=self.timeout) as client:
                    response = await client.request(method, url, json=body)
                if response.status_code not in RETRY_STATUS:
                    break
                failures.append(f"HTTP {response.status_code}: {_server_message(response)[:200]}")
            except (*TRANSIENT_ERRORS, httpx.TimeoutException) as error:
                failures.append(f"{type(error).__name__}: {error or 'no detail'}")
            if len(failures) > self.max_retries:
                raise ChatModelError(f"{method} {url} failed {len(failures)} times (retries exhausted); last: "
                                     f"{failures[-1]}")
            await asyncio.sleep(self.retry_backoff * 2 ** (len(failures) - 1))
        if response.status_code >= 400:
            raise ChatModelError(f"{method} {url} answered HTTP {response.status_code} (not retried): "
                                 f"{_server_message(response)[:300]}")
        try:
            return response.json()
        except ValueError:
            raise ChatModelError(f"{method} {url} answered non-JSON: {response.text[:200]!r}") from None


class LocalChatModel:
    """A transformers model in this process as a chat model (module docstring).

    `model_name`: an embedded name (tiny-kimi-k2.5), a local directory or a hub id, loaded on first use.
    `trust_remote_code` is passed through as given (never turned on here).
    """

    def __init__(self, model_name: str, *, device: str = "cpu", dtype: str = "auto",
                 trust_remote_code: bool = False, agent=None) -> None:
        self.model_id = model_name
        self._settings = dict(device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        self._agent = agent
        self._lock = threading.Lock()  # one generate at a time: the model is not shared between threads

    @property
    def agent(self):
        if self._agent is None:
            from stateset_agents.rollout.agent import Agent, AgentConfig

            self._agent = Agent(AgentConfig(
                model_name=self.model_id, trust_remote_code=self._settings["trust_remote_code"],
                model_kwargs={"chat_template_kwargs": {"thinking": False}, "device": self._settings["device"],
                              "dtype": self._settings["dtype"]}))
        return self._agent

    async def complete(self, messages: list[dict[str, Any]], *, temperature: float, max_tokens: int,
                       seed: int | None = None) -> str:
        return await asyncio.to_thread(self._complete, messages, temperature, max_tokens, seed)

    def _complete(self, messages: list[dict[str, Any]], temperature: float, max_tokens: int,
                  seed: int | None) -> str:
        with self._lock:
            agent = self.agent
            prompt = agent.encode(messages)
            turn = agent.generate_encoded([prompt], seeds=[seed], max_new_tokens=max_tokens,
                                          temperature=temperature, top_p=1.0, top_k=0)[0]
        return turn.parsed.content
