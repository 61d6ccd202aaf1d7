"""Rollouts on vLLM for training (`use_vllm=True`): the server(s), the client, and weight sync.

Two ways to run:
- **Managed (no `vllm_base_url`).** The trainer exports the policy (LoRA merged, public layout:
  `models.export.export_for_vllm`) into `OUTPUT_DIR/vllm/weights`, starts one vLLM server on
  loopback (`VLLMServer`: free port, log in `OUTPUT_DIR/vllm/server.log`, health-checked, its
  process group killed on exit or crash), and after every update writes the new merged weights
  there and reloads them in place (`VLLMServer.reload_weights`: vLLM's reload plus the CPU MoE
  repacking it skips; proved token for token against HF in tests/test_vllm_server.py). A restart
  is never needed. This is the CPU path, and works on a GPU for models that fit one server.
- **External servers (`vllm_base_url`: one URL or several).** Requests spread over them. Weight
  sync loads the adapter at runtime under a new name per policy version (`POST
  /v1/load_lora_adapter`, the server started with `--enable-lora --max-lora-rank R`, and
  `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`); the adapter directory must be readable by the server
  (shared filesystem), and its targets must be ones vLLM applies faithfully (no routed experts, no
  kv_b_proj: `models.export.export_adapter_for_vllm` checks). This is the GPU path (docs/vllm.md);
  runtime LoRA on MoE models fails on CPU (Triton), so it is not tested here. `vllm_sync="none"` samples from the server's own weights (stale after the
  first update: the episodes are recorded as sampled by version 0, never as on-policy).

The export is the text stack only (vLLM's Kimi-K2.5 vision path needs the hub's preprocessor
and remote code), so `TextOnVLLM` sends prompts with images to transformers in the trainer's
process, which samples exactly the policy being trained; the rest go to vLLM.

Every sampled turn records the version of the weights that produced it (`version`): the trainer
compares it with its own and counts stale episodes; π_old is recomputed by the trainer's forward,
and the sampler's log-probs only enter the truncated importance weight (training/losses.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from stateset_agents.rollout.vllm_client import VLLMGenerator
from stateset_agents.rollout.vllm_server import VLLMServer, VLLMServerSettings

MANAGED_MODEL_NAME = "policy"


class TextOnVLLM:
    """A `RolloutBackend`: text-only prompts to the vLLM client, prompts with images to `local`
    (the HF generator on the policy). Seeds are fixed before the split, so a prompt's sample does
    not depend on which way the others went."""

    name = "vllm+hf-images"
    exact_logprobs = False

    def __init__(self, remote, local):
        self.remote, self.local = remote, local
        self.image_prompts = 0  # sampled locally so far

    @property
    def max_model_len(self) -> int | None:
        return self.remote.max_model_len

    def generate(self, prompts, sampling, seeds=None):
        from stateset_agents.rollout.hf_generation import request_seeds

        seeds = request_seeds(seeds, len(prompts))
        with_images = [i for i, p in enumerate(prompts) if p.pixel_values is not None]
        text = [i for i in range(len(prompts)) if i not in set(with_images)]
        samples = {}
        for indices, backend in ((text, self.remote), (with_images, self.local)):
            if indices:
                outputs = backend.generate([prompts[i] for i in indices], sampling, [seeds[i] for i in indices])
                samples.update(zip(indices, outputs))
        self.image_prompts += len(with_images)
        return [samples[i] for i in range(len(prompts))]


class VLLMRolloutEngine:
    """The rollout backend of a training run on vLLM; `generator` is what the agent samples with."""

    def __init__(self, policy, tokenizer, stop_token_ids: list[int], *, output_dir: str | Path,
                 base_urls: list[str] | None = None, sync: str = "auto", concurrency: int = 32,
                 max_model_len: int = 4096, log: Callable[[str], None] = print):
        self.tokenizer = tokenizer
        self.log = log
        self.directory = Path(output_dir) / "vllm"
        self.server: VLLMServer | None = None
        self.version = 0
        self.sync_mode = ("reload" if not base_urls else "lora") if sync == "auto" else sync
        if self.sync_mode == "reload" and base_urls:
            raise ValueError("vllm_sync='reload' needs the managed server (leave vllm_base_url unset): an external "
                             "server's weights are reloaded from its own disk; use 'lora' (runtime adapters) or 'none'")
        if not base_urls:
            weights = self._export(policy)
            settings = VLLMServerSettings(max_model_len=max_model_len, served_model_name=MANAGED_MODEL_NAME)
            self.server = VLLMServer(weights, self.directory / "server.log", settings)
            log(f"vllm: starting a managed server for {weights} (log {self.server.log_path})")
            self.server.start()
            log(f"vllm: server up at {self.server.base_url} in {self.server.startup_seconds:.1f}s")
            base_urls = [self.server.base_url]
        self.generator = VLLMGenerator(base_urls, None if self.server is None else MANAGED_MODEL_NAME,
                                       stop_token_ids=stop_token_ids, concurrency=concurrency)
        try:
            self.generator.check_server(tokenizer)  # the served vocabulary is ours: ids mean the same tokens
        except Exception:
            self.close()
            raise
        self.base_model_name = self.generator.model

    @property
    def max_model_len(self) -> int | None:
        return self.generator.max_model_len

    def _export(self, policy) -> Path:
        from stateset_agents.models.export import export_for_vllm

        return export_for_vllm(policy, self.tokenizer, self.directory / "weights")

    def sync(self, policy, version: int, write: bool = True) -> float:
        """Make the server sample with `policy` (optimizer step `version`); returns the seconds it took.
        `write=False` (data-parallel ranks other than 0): rank 0 pushes, this rank only follows the name."""
        started = time.perf_counter()
        if self.sync_mode == "none":
            return 0.0  # the server keeps its weights, and its samples keep their old version
        if self.sync_mode == "reload" and write:
            self._reload(policy)
        elif self.sync_mode == "lora":
            self._load_adapter(policy, version, write)
        self.version = version
        return time.perf_counter() - started

    def _reload(self, policy) -> None:
        from stateset_agents.rollout.vllm_server import VLLMServerError

        try:
            self.server.reload_weights(self._export(policy))
        except Exception as error:
            state = ("has exited (code {})".format(self.server.process.poll())
                     if self.server.process is not None and self.server.process.poll() is not None else "is running")
            raise VLLMServerError(
                f"weight sync to the managed vLLM server at {self.server.base_url} failed ({type(error).__name__}: "
                f"{error}); the server {state}. Its log ({self.server.log_path}) ends with:\n"
                f"{self.server.log_tail(10)}\nCheckpoints up to the last complete iteration are kept: --resume "
                f"continues from there.") from error

    def _load_adapter(self, policy, version: int, write: bool) -> None:
        """GPU path: save the adapter and load it at runtime under a new name (see the module docstring)."""
        import httpx

        name = f"policy-v{version}"
        path = (self.directory / "adapters" / name).resolve()
        if not write:
            self.generator.model = name
            return
        from stateset_agents.models.export import export_adapter_for_vllm

        saved = self.directory / "adapters" / "peft" / name
        policy.save_pretrained(str(saved))
        # vLLM's module names; refuses (ExportError) targets runtime LoRA cannot apply faithfully: routed
        # experts and kv_b_proj (vLLM folds it into the MLA decode weights at load)
        export_adapter_for_vllm(saved, path)
        for url in self.generator.base_urls:
            response = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)},
                                  timeout=600)
            if response.status_code != 200:
                raise RuntimeError(f"{url} refused the adapter {name} ({response.status_code}: {response.text[:300]}); "
                                   f"start vLLM with --enable-lora --max-lora-rank >= lora_r and "
                                   f"VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, and give it read access to {path}")
        self.generator.model = name

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
