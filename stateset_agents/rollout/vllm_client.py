"""Rollouts sampled by vLLM servers over their OpenAI-compatible `/v1/completions`, token-in, token-out.

`VLLMGenerator` implements `rollout.backend.RolloutBackend` (HFGenerator's signature). Each
prompt goes out as its exact token ids (`prompt: [ids]`) and comes back as the exact sampled ids
(`return_token_ids`) with one logprob per sampled id (`logprobs: 0`, `return_tokens_as_token_ids`):
no text is decoded or re-tokenised anywhere, and the echoed `prompt_token_ids` are checked
against what was sent. Every sampling parameter is sent explicitly (temperature, top_p, top_k
with -1 for off, no penalties, `seed` per request, `ignore_eos` so that only our
`stop_token_ids` end a completion, as in HFGenerator): the server's `generation_config.json`
defaults (the export's top_p 0.95, say) never apply silently. The stop token, when sampled, is
the last completion id and `finished` is True.

What the logprobs are. With `--logprobs-mode processed_logprobs` (VLLMServer's default) vLLM
returns the log-softmax of the logits after its processors, temperature, top-k and top-p: log μ,
the distribution the token was actually drawn from. With top_p = 1 and top_k off that is
log-softmax(logits / T), the trainer's definition of the sampling logprob; with truncation it is
renormalised over the kept tokens (≥ the untruncated value, by minus the log of the kept mass).
At temperature 0 (greedy) it is log-softmax(logits), i.e. temperature 1, like HFGenerator. vLLM's
default mode, `raw_logprobs`, ignores the temperature. Tokens of zero probability come back as
-9999.0 (JSON has no -inf). Either way these are the *sampler's* numbers, from another engine's
kernels: `exact_logprobs` is False and the trainer recomputes π_old itself. Measured on the tiny
model (builder's init, top_p 1, top_k off; tests/test_vllm_client.py): most tokens agree with the
trainer's teacher-forced logprobs to 1e-6 nats, a few sequences differ by up to ~0.07 nats.

Concurrency: requests run on asyncio with one `httpx.AsyncClient`, at most `concurrency` in
flight, spread round-robin over `base_urls` (several servers serving the same weights). The
trainer is synchronous, so `generate` runs its own event loop (`asyncio.run`, or in a worker
thread when the caller is already inside a running loop). Only failures that lost the request
before the server answered (connection refused or reset, a server closing the connection) are
retried, a bounded number of times; everything else is an error that says what happened and
where. Text-only: prompts with images are refused (export_for_vllm writes the text stack only).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
from dataclasses import dataclass
from typing import Any

import httpx

from stateset_agents.rollout.encoding import EncodedPrompt
from stateset_agents.rollout.hf_generation import Sample, SamplingSettings, request_seeds

START_HINT = ("Start one with `python -m vllm.entrypoints.openai.api_server --model EXPORT_DIR "
              "--logprobs-mode processed_logprobs` (EXPORT_DIR from `models.export.export_for_vllm`), "
              "or leave vllm_base_url unset to have the trainer start a managed server.")
# the request was lost before any answer: safe to send again (the seed makes the retry identical)
TRANSIENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                    httpx.WriteError)


class VLLMClientError(RuntimeError):
    """A vLLM server could not be used; the message names the server and what to do."""


class VLLMUnreachableError(VLLMClientError):
    """Nothing answers at a base URL (or it stopped answering mid-request, retries exhausted)."""


class VLLMModelMismatchError(VLLMClientError):
    """A server serves another model, or tokenises differently from the trainer's tokenizer."""


class VLLMRequestError(VLLMClientError):
    """A server refused a request (HTTP error status) or answered something unusable."""


class VLLMPromptTooLongError(ValueError):
    """A prompt plus the tokens to sample does not fit the server's `max_model_len`."""


@dataclass(frozen=True)
class ServerInfo:
    """What `/v1/models` says about one server."""

    base_url: str
    model: str
    max_model_len: int | None


def completion_body(model: str, prompt_ids: list[int], sampling: SamplingSettings, seed: int,
                    stop_token_ids: list[int]) -> dict[str, Any]:
    """The `/v1/completions` request for one prompt: every sampling parameter explicit (module docstring)."""
    return dict(
        model=model, prompt=list(prompt_ids), max_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature, top_p=sampling.top_p,
        top_k=sampling.top_k if sampling.top_k and sampling.top_k > 0 else -1,
        min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0,
        seed=seed, stop_token_ids=list(stop_token_ids), ignore_eos=True, skip_special_tokens=False,
        logprobs=0, return_token_ids=True, return_tokens_as_token_ids=True, n=1, stream=False,
        # ids the model must never emit (the image placeholder): OpenAI's strongest bias, as HF's suppression
        **({"logit_bias": {str(t): -100 for t in sampling.suppress_token_ids}} if sampling.suppress_token_ids else {}),
    )


def sample_from_choice(prompt: EncodedPrompt, choice: dict[str, Any], stop_token_ids: list[int],
                       base_url: str) -> Sample:
    """A `Sample` from one response choice, after checking it is what token-in, token-out needs."""
    echoed = choice.get("prompt_token_ids")
    if echoed != prompt.input_ids:
        raise VLLMRequestError(
            f"{base_url} echoed prompt ids that differ from those sent ({_preview(echoed)} vs "
            f"{_preview(prompt.input_ids)}): the server changed the prompt (added tokens?); refusing to train on it")
    ids = choice.get("token_ids")
    logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
    if ids is None or logprobs is None or len(ids) != len(logprobs):
        raise VLLMRequestError(f"{base_url} returned no token ids or no logprob per token (token_ids "
                               f"{_preview(ids)}, token_logprobs {_preview(logprobs)}); is it vLLM >= 0.10?")
    finished = bool(ids) and ids[-1] in stop_token_ids
    return Sample(prompt, [int(t) for t in ids], [float(x) for x in logprobs], finished=finished)


def _preview(values: Any, limit: int = 8) -> str:
    if not isinstance(values, list):
        return repr(values)
    return repr(values) if len(values) <= limit else f"[{', '.join(map(str, values[:limit]))}, ...] ({len(values)})"


def run_sync(coroutine):
    """Run `coroutine` to completion from synchronous code, even when this thread already runs a loop
    (the trainer is synchronous; notebooks and async environments call it from inside a loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class VLLMGenerator:
    """Samples completions from one or more vLLM servers; a `RolloutBackend` (module docstring).

    `base_urls`: "http://host:port" of each server (no `/v1`). `model`: the served model name to
    request; None = the model the servers serve (all must agree). The servers are asked `/v1/models` on
    first use (or `connect()`); `check_server(tokenizer)` also compares tokenisation.
    """

    name = "vllm"
    exact_logprobs = False  # the sampler's log μ: the trainer recomputes π_old

    def __init__(self, base_urls: str | list[str], model: str | None = None, *, stop_token_ids: list[int],
                 concurrency: int = 32, timeout: float = 600.0, connect_timeout: float = 5.0,
                 max_retries: int = 3, retry_delay: float = 0.5):
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("VLLMGenerator needs at least one base URL, e.g. 'http://127.0.0.1:8000'")
        if concurrency < 1 or max_retries < 0:
            raise ValueError(f"concurrency must be >= 1 and max_retries >= 0 (got {concurrency}, {max_retries})")
        self.base_urls = [_normalise_url(url) for url in urls]
        self.model = model
        self.stop_token_ids = [int(t) for t in stop_token_ids]
        self.concurrency = concurrency
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.servers: list[ServerInfo] | None = None
        self._next_server = itertools.count()

    # -- server checks -------------------------------------------------------------------
    @property
    def max_model_len(self) -> int | None:
        """The smallest `max_model_len` of the servers (None if none states one)."""
        lengths = [s.max_model_len for s in self.connect() if s.max_model_len is not None]
        return min(lengths) if lengths else None

    def connect(self) -> list[ServerInfo]:
        """Ask every server's `/v1/models` (once): each must be reachable and serve `model`."""
        if self.servers is None:
            servers = run_sync(self._gather(self._server_info, self.base_urls))
            names = {server.model for server in servers}
            if len(names) > 1:
                raise VLLMModelMismatchError(
                    f"the servers serve different models ({', '.join(f'{s.base_url}: {s.model!r}' for s in servers)}); "
                    "every base URL must serve the same policy (pass `model` to choose the served name)")
            self.servers, self.model = servers, names.pop()
        return self.servers

    def check_server(self, tokenizer, probe: str | None = None) -> None:
        """Raise `VLLMModelMismatchError` unless every server tokenises `probe` to our tokenizer's ids.

        The default probe holds plain text and every special/added token of `tokenizer` (the highest
        id included), so a server with another vocabulary, another special-token layout or another
        model family disagrees somewhere. Prompts are sent as ids, so this is the only place where
        a tokenizer mismatch can be seen before the rollouts are silently garbage.
        """
        self.connect()
        probe = probe if probe is not None else default_probe(tokenizer)
        expected = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
        got = run_sync(self._gather(lambda client, url: self._tokenize(client, url, probe), self.base_urls))
        for url, ids in zip(self.base_urls, got):
            if ids != expected:
                first = next((i for i, (a, b) in enumerate(zip(ids, expected)) if a != b), min(len(ids), len(expected)))
                raise VLLMModelMismatchError(
                    f"{url} (model {self.model!r}) tokenises differently from the trainer's tokenizer: the probe "
                    f"gives {len(ids)} ids vs {len(expected)}, first difference at position {first} "
                    f"({ids[first:first + 4]} vs {expected[first:first + 4]}). Serve the export of the model "
                    "being trained (`models.export.export_for_vllm`).")

    async def _server_info(self, client: httpx.AsyncClient, url: str) -> ServerInfo:
        listing = await self._request(client, url, "GET", "/v1/models")
        served = {entry.get("id"): entry for entry in listing.get("data", [])}
        wanted = self.model if self.model is not None else next(iter(served), None)
        if wanted not in served:
            raise VLLMModelMismatchError(
                f"{url} serves {sorted(map(str, served)) or 'no model'}, not {wanted!r}: it is another server, "
                "or was started with another --served-model-name. Point vllm_base_url at the server of the "
                "exported policy, or pass the served name as `model`.")
        length = served[wanted].get("max_model_len")
        return ServerInfo(url, wanted, int(length) if length is not None else None)

    async def _tokenize(self, client: httpx.AsyncClient, url: str, text: str) -> list[int]:
        body = dict(model=self.model, prompt=text, add_special_tokens=False)
        return list((await self._request(client, url, "POST", "/tokenize", body))["tokens"])

    # -- generation ----------------------------------------------------------------------
    def generate(self, prompts: list[EncodedPrompt], sampling: SamplingSettings,
                 seeds: list[int | None] | None = None) -> list[Sample]:
        """One completion per prompt, in order; prompt i is sampled with `seeds[i]` (None: drawn from
        the global torch RNG, as HFGenerator does), on server `i`-th in round-robin order."""
        if not prompts:
            return []
        self.connect()
        self.check_prompts(prompts, sampling.max_new_tokens)
        request_seed_list = request_seeds(seeds, len(prompts))
        start = next(self._next_server)  # successive calls start on successive servers
        urls = [self.base_urls[(start + i) % len(self.base_urls)] for i in range(len(prompts))]
        jobs = list(zip(prompts, request_seed_list, urls))
        return run_sync(self._generate_all(jobs, sampling))

    def check_prompts(self, prompts: list[EncodedPrompt], max_new_tokens: int) -> None:
        """Refuse prompts with images (text-only export) and prompts that would not fit `max_model_len`."""
        with_images = [i for i, p in enumerate(prompts) if p.images or p.pixel_values is not None]
        if with_images:
            raise ValueError(f"prompts {with_images[:5]} contain images, but the vLLM backend serves the text-only "
                             "export (export_for_vllm drops the vision tower); use the HF backend for images")
        limit = self.max_model_len
        too_long = [(i, len(p.input_ids)) for i, p in enumerate(prompts)
                    if limit is not None and len(p.input_ids) + max_new_tokens > limit]
        if too_long:
            index, length = too_long[0]
            raise VLLMPromptTooLongError(
                f"prompt {index} has {length} tokens; with max_new_tokens {max_new_tokens} that is "
                f"{length + max_new_tokens}, more than the server's max_model_len {limit} ({len(too_long)} of "
                f"{len(prompts)} prompts are over). Start the server with a larger --max-model-len, or shorten prompts.")

    async def _generate_all(self, jobs: list[tuple[EncodedPrompt, int, str]], sampling: SamplingSettings) -> list[Sample]:
        semaphore = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as client:
            async def one(prompt: EncodedPrompt, seed: int, url: str) -> Sample:
                async with semaphore:
                    body = completion_body(self.model, prompt.input_ids, sampling, seed, self.stop_token_ids)
                    response = await self._request(client, url, "POST", "/v1/completions", body)
                return sample_from_choice(prompt, response["choices"][0], self.stop_token_ids, url)

            tasks = [asyncio.ensure_future(one(*job)) for job in jobs]
            try:
                return list(await asyncio.gather(*tasks))
            finally:  # one failure fails the call: cancel the rest instead of waiting for them
                for task in tasks:
                    task.cancel()

    # -- HTTP ----------------------------------------------------------------------------
    async def _gather(self, call, urls: list[str]) -> list:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            return list(await asyncio.gather(*(call(client, url) for url in urls)))

    async def _request(self, client: httpx.AsyncClient, url: str, method: str, path: str,
                       body: dict | None = None) -> dict:
        """One JSON request; transient transport errors are retried `max_retries` times (module docstring)."""
        failures: list[Exception] = []
        while True:
            try:
                response = await client.request(method, url + path, json=body)
                break
            except TRANSIENT_ERRORS as error:
                failures.append(error)
                if len(failures) > self.max_retries:
                    raise VLLMUnreachableError(_transport_message(url, path, failures)) from error
                await asyncio.sleep(self.retry_delay * 2 ** (len(failures) - 1))
            except httpx.TimeoutException as error:
                raise VLLMRequestError(f"{url}{path} did not answer within {self.timeout.read}s "
                                       f"({type(error).__name__}); raise `timeout` or check the server") from error
        if response.status_code >= 400:
            raise VLLMRequestError(f"{url}{path} answered HTTP {response.status_code}: {_server_message(response)}")
        try:
            return response.json()
        except ValueError as error:
            raise VLLMRequestError(f"{url}{path} answered non-JSON: {response.text[:200]!r}") from error


def default_probe(tokenizer) -> str:
    """Text plus every special and added token of `tokenizer` (see `VLLMGenerator.check_server`)."""
    added = getattr(tokenizer, "get_added_vocab", lambda: {})()
    special = list(getattr(tokenizer, "all_special_tokens", None) or [])
    markup = sorted(set(special) | set(added), key=lambda token: added.get(token, -1))
    return "Hello! Where is my refund for order T916? 12 items, $3.50 each.\n" + " x ".join(markup)


def _normalise_url(url: str) -> str:
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"vLLM base URL {url!r} must start with http:// or https:// (e.g. http://127.0.0.1:8000)")
    return url.removesuffix("/v1")


def _transport_message(url: str, path: str, failures: list[Exception]) -> str:
    """Say whether the server was never there or went away during a request (it died or was killed)."""
    attempts = f"{len(failures)} attempts, last: {type(failures[-1]).__name__}: {failures[-1] or 'no detail'}"
    if all(isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)) for error in failures):
        return f"nothing answers at {url} ({attempts}). {START_HINT}"
    return (f"the vLLM server at {url} closed the connection during {path} without answering and did not "
            f"recover ({attempts}): it probably died mid-request; check its log and restart it")


def _server_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", response.json())
        return str(error.get("message", error)) if isinstance(error, dict) else str(error)
    except ValueError:
        return response.text[:300]
