"""`stateset-agents serve`: the launch command for an export (or the hub Kimi-K2.5) on vLLM, SGLang or
ktransformers, and with `--run` a vLLM server started here and smoke-tested.

    stateset-agents serve exports/cs-merged --engine vllm           # print the command
    stateset-agents serve moonshotai/Kimi-K2.5 --engine sglang      # the real model: 8 GPUs, tensor parallel
    stateset-agents serve exports/cs-merged --engine vllm --run     # start it (CPU build), smoke-test, serve

Which command. A local model whose weights are under 2 GiB (the tiny Kimi-K2.5) gets the CPU command
(`--device auto`): vLLM's CPU build from its own environment with the flags `VLLMServerSettings` holds
(measured to work on CPU: float32, `--enforce-eager`, `--max-model-len 1024`, `VLLM_CPU_KVCACHE_SPACE`;
`rollout/vllm_server.py`), the same command `--run` starts. Anything else (a hub id, a large export) gets
the GPU command for one 8-GPU node (`--tp`): `--trust-remote-code --tool-call-parser kimi_k2
--reasoning-parser kimi_k2`, as Moonshot's deployment guide and the engines' Kimi-K2.5 pages give them,
plus vLLM's `--enable-auto-tool-choice` (without it vLLM's chat endpoint does not parse tool calls
for `tool_choice: auto`) and, for the hub checkpoint (vision tower), `--mm-encoder-tp-mode data`. An
adapter-only export is served on its base with vLLM's runtime LoRA flags. Lines marked UNVERIFIED were
not run here (SGLang and ktransformers are not installed on these machines; ktransformers' command is
taken from its Kimi-K2.5 tutorial: SGLang with kt-kernel, routed experts on the CPU).

`--run` (vLLM only, a model that fits this machine): starts `VLLMServer` (the vLLM environment,
`.venv-vllm`) with the Kimi parsers, waits for `/health`, then smoke-tests it (`smoke_test`): it asks
`/tokenize` how vLLM renders `SMOKE_MESSAGES` + `SMOKE_TOOLS` through the export's chat template and
compares the ids with the export's own tokenizer (the trainer's rendering), then sends the same
conversation to `/v1/chat/completions` (greedy) and prints the message as vLLM's `kimi_k2` reasoning and
tool parsers returned it (`reasoning`, `content`, `tool_calls`). A model that does not emit a tool call
is not an error here: the point is that the server answers through the parsers; tests/test_cli_export_serve.py
trains the tiny model to emit one. Then it serves until Ctrl-C (`--smoke-only`: stops after the test).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["add_serve_arguments", "serve_from_args", "launch_commands", "smoke_test", "SMOKE_MESSAGES", "SMOKE_TOOLS",
           "KIMI_VLLM_FLAGS"]

ENGINES = ("vllm", "sglang", "ktransformers")
DEFAULT_PORTS = {"vllm": 8000, "sglang": 30000, "ktransformers": 30000}
CPU_MAX_BYTES = 2 * 1024**3
KIMI_PARSERS = ["--tool-call-parser", "kimi_k2", "--reasoning-parser", "kimi_k2"]
KIMI_VLLM_FLAGS = ["--enable-auto-tool-choice", *KIMI_PARSERS]
KTRANSFORMERS_DOC = "https://github.com/kvcache-ai/ktransformers/blob/main/doc/en/Kimi-K2.5.md"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

SMOKE_TOOLS = [{"type": "function", "function": {
    "name": "get_order_status", "description": "Look up the shipping status of an order.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "description": "The order id"}},
                   "required": ["order_id"]}}}]
SMOKE_MESSAGES = [{"role": "system", "content": "You are a customer service agent. Use the tools."},
                  {"role": "user", "content": "Where is my order T916?"}]


class ServeInputError(ValueError):
    """A bad input to `serve` (one `error:` line, exit status 2)."""


@dataclass
class ServeTarget:
    """What DIR is: a local export (model or adapter) or a hub id."""

    model: str
    local: bool
    adapter: dict | None = None
    weight_bytes: int | None = None
    kimi_hub: bool = False

    @property
    def name(self) -> str:
        return self.model if not self.local else Path(self.model).name


def inspect_target(given: str) -> ServeTarget:
    path = Path(given).expanduser()
    if not path.exists():
        if _HUB_ID.fullmatch(given):
            return ServeTarget(given, local=False, kimi_hub="kimi-k2" in given.lower())
        raise ServeInputError(f"{given} does not exist (pass an export directory or a hub id such as "
                              f"moonshotai/Kimi-K2.5)")
    if (path / "adapter_config.json").is_file():
        return ServeTarget(str(path), local=True, adapter=json.loads((path / "adapter_config.json").read_text()))
    if not (path / "config.json").is_file():
        raise ServeInputError(f"{given} is not a model directory (no config.json) nor an adapter export (no "
                              f"adapter_config.json); make one with `stateset-agents export`")
    config = json.loads((path / "config.json").read_text())
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    return ServeTarget(str(path), local=True, weight_bytes=size, kimi_hub=config.get("model_type") == "kimi_k25")


def _device(target: ServeTarget, device: str) -> str:
    if device != "auto":
        return device
    if target.adapter is not None:
        base = target.adapter.get("base_model_name_or_path") or ""
        return "cpu" if Path(base).is_dir() and inspect_target(base).weight_bytes < CPU_MAX_BYTES else "gpu"
    return "cpu" if target.local and (target.weight_bytes or 0) < CPU_MAX_BYTES else "gpu"


def cpu_vllm_command(model: str, port: int, served_name: str, extra: list[str] | None = None) -> list[str]:
    """The CPU vLLM command `--run` starts (VLLMServer's), env assignment first."""
    from stateset_agents.rollout.vllm_server import REPO_ROOT, VENV_DIRNAME, server_command

    settings = _cpu_settings(served_name, extra)
    python = REPO_ROOT / VENV_DIRNAME / "bin" / "python"
    return [f"VLLM_CPU_KVCACHE_SPACE={settings.kv_cache_gib}",
            *server_command(python, model, "127.0.0.1", port, settings)]


def _cpu_settings(served_name: str, extra: list[str] | None = None):
    from stateset_agents.rollout.vllm_server import VLLMServerSettings

    return VLLMServerSettings(served_model_name=served_name, weight_reload=False,
                              extra_args=[*KIMI_VLLM_FLAGS, *(extra or [])])


def _lora_flags(target: ServeTarget) -> tuple[str, list[str]]:
    """(base to serve, LoRA flags) for an adapter export."""
    rank = int(target.adapter.get("r") or 16)
    base = target.adapter.get("base_model_name_or_path") or "BASE_TEXT_EXPORT"
    return base, ["--enable-lora", "--max-lora-rank", str(max(16, rank)), "--lora-modules", f"{target.name}={target.model}"]


def launch_commands(target: ServeTarget, engine: str, port: int, device: str, tp: int) -> list[tuple[str, str]]:
    """[(comment, shell command)] for `engine` (module docstring). A comment starting UNVERIFIED was not run here."""
    lora: list[str] = []
    model = target.model
    if target.adapter is not None:
        model, lora = _lora_flags(target)
    if device == "cpu":
        return _cpu_commands(target, engine, model, port, lora)
    notes = []
    if target.weight_bytes and target.weight_bytes > 8 * 141 * 1024**3 * 0.9:
        notes.append(f"the weights are {target.weight_bytes / 1024**4:.2f} TiB: more than one 8xH200 node holds "
                     f"(a bf16 merge of Kimi-K2.5 is ~2 TB); add pipeline parallelism over nodes or quantize")
    if engine == "vllm":
        vision = ["--mm-encoder-tp-mode", "data"] if target.kimi_hub else []  # the hub checkpoint has a vision tower
        command = ["vllm", "serve", model, "-tp", str(tp), *vision, "--trust-remote-code", *KIMI_VLLM_FLAGS,
                   *lora, "--host", "0.0.0.0", "--port", str(port)]
        comment = f"vLLM, one node, tensor parallel {tp} (e.g. 8xH200)"
        if lora:
            comment += ("; the base must be a DeepseekV3ForCausalLM text export: vLLM's Kimi-K2.5 class has no "
                        "runtime LoRA")
        return [(c, "") for c in notes] + [(comment, shlex.join(command))]
    if engine == "sglang":
        command = ["python", "-m", "sglang.launch_server", "--model-path", model, "--tp", str(tp),
                   "--trust-remote-code", *KIMI_PARSERS, "--host", "0.0.0.0", "--port", str(port)]
        if lora:
            command += ["--enable-lora", "--lora-paths", f"{target.name}={target.model}"]
            return [(c, "") for c in notes] + [("UNVERIFIED: SGLang runtime LoRA on DeepSeek-V3/MLA was not checked "
                                                "here; prefer `export --merge`", shlex.join(command))]
        return [(c, "") for c in notes] + [(f"SGLang, one node, tensor parallel {tp} (not run here: SGLang is not "
                                            "installed on these machines)", shlex.join(command))]
    command = ["python", "-m", "sglang.launch_server", "--model", model, "--kt-weight-path", model,
               "--kt-method", "RAWINT4", "--kt-cpuinfer", "<physical CPU cores>", "--kt-threadpool-count",
               "<NUMA nodes>", "--kt-num-gpu-experts", "<experts kept on GPU>", "--tp", "<GPUs>",
               "--trust-remote-code", *KIMI_PARSERS, "--host", "0.0.0.0", "--port", str(port)]
    comment = (f"UNVERIFIED (not installed or run here): ktransformers serves Kimi-K2.5 through its SGLang fork "
               f"(`pip install kt-kernel sglang-kt`) with routed experts on the CPU (AVX512/AMX, ~600 GB RAM for the "
               f"INT4 hub weights) and attention on the GPU(s); flags from {KTRANSFORMERS_DOC}. RAWINT4 reads the hub's "
               f"native INT4 experts; a bf16 merged export needs another --kt-method / converted CPU weights (not "
               f"checked); adapters are not served")
    return [(c, "") for c in notes] + [(comment, shlex.join(command).replace("'", ""))]


def _cpu_commands(target: ServeTarget, engine: str, model: str, port: int, lora: list[str]) -> list[tuple[str, str]]:
    if engine == "vllm":
        comment = "vLLM CPU build (.venv-vllm, `make vllm-env`), the flags VLLMServerSettings measured to work on CPU"
        if lora:
            comment += ("; UNVERIFIED: vLLM's runtime LoRA on MoE layers fails on CPU (Triton kernels), use "
                        "`export --merge` for the tiny model")
        return [(comment, shlex.join(cpu_vllm_command(model, port, target.name, lora)))]
    if engine == "sglang":
        command = ["python", "-m", "sglang.launch_server", "--model-path", model, "--device", "cpu", "--dtype",
                   "float32", *KIMI_PARSERS, "--host", "127.0.0.1", "--port", str(port)]
        return [("UNVERIFIED: SGLang is not installed here; its CPU backend targets Intel Xeon (AMX); MLA on CPU "
                 "at these widths not checked", shlex.join(command))]
    return [("ktransformers does not apply: it runs attention on a CUDA GPU and offloads routed experts to the CPU; "
             "for a model this small use vLLM's CPU build (`--engine vllm`)", "")]


# ----------------------------------------------------------------------------- --run


def smoke_test(base_url: str, model: str, tokenizer_dir: str | Path | None = None, max_tokens: int = 96,
               timeout: float = 300.0) -> dict[str, Any]:
    """Greedy chat completion of `SMOKE_MESSAGES` with `SMOKE_TOOLS` through the server's parsers.

    Returns {"message": the response message (vLLM 0.32 names the reasoning field `reasoning`),
    "finish_reason", "prompt_ids_equal": whether vLLM's rendering (`/tokenize`) equals
    `tokenizer_dir`'s `apply_chat_template` (None without a tokenizer), "prompt_tokens"}."""
    import httpx

    result: dict[str, Any] = {"prompt_ids_equal": None}
    with httpx.Client(base_url=base_url, timeout=timeout) as client:
        if tokenizer_dir is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
            ours = list(tokenizer.apply_chat_template(SMOKE_MESSAGES, tools=SMOKE_TOOLS, add_generation_prompt=True,
                                                      tokenize=True, return_dict=True)["input_ids"])
            response = client.post("/tokenize", json={"model": model, "messages": SMOKE_MESSAGES, "tools": SMOKE_TOOLS,
                                                      "add_generation_prompt": True})
            response.raise_for_status()
            result["prompt_ids_equal"] = response.json()["tokens"] == ours
            result["prompt_tokens"] = len(ours)
        body = {"model": model, "messages": SMOKE_MESSAGES, "tools": SMOKE_TOOLS, "tool_choice": "auto",
                "temperature": 0.0, "max_tokens": max_tokens}
        response = client.post("/v1/chat/completions", json=body)
        if response.status_code != 200:
            raise ServeInputError(f"POST /v1/chat/completions -> {response.status_code}: {response.text[:400]}")
        choice = response.json()["choices"][0]
    result.update(message=choice["message"], finish_reason=choice.get("finish_reason"))
    return result


def describe_smoke(result: dict[str, Any]) -> list[str]:
    message = result["message"]
    lines = []
    if result["prompt_ids_equal"] is not None:
        verdict = "identical to" if result["prompt_ids_equal"] else "DIFFERENT from"
        lines.append(f"prompt: vLLM's rendering of the smoke conversation (tools included) is {verdict} the "
                     f"export's tokenizer ({result['prompt_tokens']} tokens)")
    calls = message.get("tool_calls") or []
    lines += [f"smoke test: POST /v1/chat/completions, greedy -> finish_reason {result['finish_reason']}",
              f"  reasoning (kimi_k2 reasoning parser): {message.get('reasoning')!r}",
              f"  content: {message.get('content')!r}",
              "  tool_calls (kimi_k2 tool parser): " + (", ".join(
                  f"{c['function']['name']}({c['function']['arguments']})" for c in calls) or
                  "none (the model emitted no tool call)")]
    return lines


def run_vllm(args: argparse.Namespace, target: ServeTarget, port: int, log=print) -> int:
    from stateset_agents.rollout.vllm_server import VLLMServer, VLLMServerError

    log_path = Path(args.log or Path(tempfile.gettempdir()) / f"stateset-serve-{target.name}-{port}.log")
    server = VLLMServer(target.model, log_path, _cpu_settings(target.name), port=port)
    log(f"starting vLLM (log {log_path}) ...")
    try:
        with server:
            log(f"vLLM up in {server.startup_seconds:.1f}s at {server.base_url}/v1 (model {target.name!r})")
            result = smoke_test(server.base_url, target.name, target.model)
            for line in describe_smoke(result):
                log(line)
            log("smoke result: " + json.dumps(result, sort_keys=True))
            if args.smoke_only:
                return 0
            log("serving; Ctrl-C stops the server")
            try:
                server.process.wait()
            except KeyboardInterrupt:
                log("stopping")
            return 0
    except VLLMServerError as error:
        raise ServeInputError(str(error)) from None


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="DIR", help="an export (`stateset-agents export`) or a hub id "
                                                      "(moonshotai/Kimi-K2.5)")
    parser.add_argument("--engine", choices=ENGINES, default="vllm", help="inference engine (default vllm)")
    parser.add_argument("--port", type=int, default=None, help="port (default: vllm 8000, sglang 30000)")
    parser.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                        help="auto: CPU for a local model under 2 GiB of weights, else GPU")
    parser.add_argument("--tp", type=int, default=8, help="tensor parallel GPUs for the GPU command (default 8)")
    parser.add_argument("--run", action="store_true",
                        help="start vLLM here (CPU build), smoke-test it with a tool-calling chat, keep serving")
    parser.add_argument("--smoke-only", action="store_true", help="with --run: stop after the smoke test")
    parser.add_argument("--log", default=None, help="with --run: the server's log file")


def serve_from_args(args: argparse.Namespace) -> int:
    """`stateset-agents serve`: every bad input is one `error:` line and exit status 2."""
    from stateset_agents.cli import fail
    from stateset_agents.rollout.vllm_server import VLLMNotAvailableError

    port = args.port or DEFAULT_PORTS[args.engine]
    try:
        target = inspect_target(args.target)
        device = _device(target, args.device)
        if args.run:
            if args.engine != "vllm":
                raise ServeInputError(f"--run starts vLLM only; for {args.engine} run the printed command")
            if device != "cpu" or not target.local or target.adapter is not None:
                raise ServeInputError("--run starts the CPU vLLM build for a merged export that fits this machine "
                                      "(under 2 GiB of weights); on a GPU node run the printed command")
            print(f"# {_cpu_commands(target, 'vllm', target.model, port, [])[0][0]}")
            print(_cpu_commands(target, "vllm", target.model, port, [])[0][1])
            return run_vllm(args, target, port)
        for comment, command in launch_commands(target, args.engine, port, device, args.tp):
            print(f"# {comment}")
            if command:
                print(command)
    except (ServeInputError, VLLMNotAvailableError) as error:
        return fail(str(error))
    return 0
