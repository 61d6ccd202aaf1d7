"""What both frameworks share in the side-by-side benchmark: models, prompts, reward, settings.

Models. Two DeepSeek-V3 causal LMs (`DeepseekV3ForCausalLM`: MLA attention, MoE with routed +
shared experts, layer 0 dense, YaRN rope) with the text config of the tiny Kimi-K2.5 and its
tokenizer (Kimi's special tokens and chat template). The Kimi-K2.5 wrapper class is an
image-text-to-text model that TRL's GRPOTrainer does not load as a causal LM, so both
frameworks get the text backbone. The tokenizer's EOS is set to `<|im_end|>`, so both stop on
the same token (TRL stops on the tokenizer's EOS and the generation config's; ours on the chat
format's end of turn).

- `tiny`: the embedded default's sizes (`TinyKimiSpec()`): per-token overhead dominates.
- `small`: ~20M parameters (hidden 384, 6 layers, 8 experts of 256): compute matters.

Models are built once, seeded, into `$STATESET_AGENTS_CACHE/bench_models/<name>` (default
`~/.cache/stateset_agents/bench_models`).

Prompts. Single-turn: the system prompt and opening user message of customer_service training
scenarios, no tools, rendered by the same chat template (thinking on: the generation prompt
ends in `<think>`). The order of prompts is fixed by `prompt_schedule` and fed to both.

Reward. `parity_reward(completion_ids)`: the fraction of sampled tokens with an even id. It is
computed from the exact sampled ids (both trainers hand them to the reward), so both
frameworks score identically, it varies within a group, and a policy can learn it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PROMPT = "You are a customer service agent for an online store. Be brief and accurate."


@dataclass(frozen=True)
class BenchModel:
    name: str
    spec_overrides: dict = field(default_factory=dict)
    description: str = ""


MODELS: dict[str, BenchModel] = {
    "tiny": BenchModel("tiny", {}, "TinyKimiSpec() text backbone: hidden 128, 4 layers, 8 experts"),
    "small": BenchModel("small", dict(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1024,
        moe_intermediate_size=256, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
        q_lora_rank=96, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
    ), "hidden 384, 6 layers, 8 experts of 256, MLA q_lora 96 / kv_lora 64"),
}


def _shared_settings() -> dict:
    """The numbers the benchmark takes from the package instead of copying them: the Kimi-K2.5
    preset's clip range, group size, scenarios per iteration and gradient clip, and the demo's CPU
    scale (learning rate, LoRA rank and alpha, completion length, optimizer steps per rollout)."""
    from stateset_agents.demo import DEMO_OVERRIDES
    from stateset_agents.training.config import TrainingConfig
    from stateset_agents.training.kimi25_config import KIMI25_PRESET

    preset = {**KIMI25_PRESET, **DEMO_OVERRIDES}
    defaults = TrainingConfig.model_fields
    episodes = preset["scenarios_per_iteration"] * preset["num_generations"]
    return dict(
        prompts_per_iteration=preset["scenarios_per_iteration"], group_size=preset["num_generations"],
        steps_per_rollout=episodes // (preset["per_device_train_batch_size"] * preset["gradient_accumulation_steps"]),
        max_new_tokens=preset["max_new_tokens"], learning_rate=preset["learning_rate"], lora_r=preset["lora_r"],
        lora_alpha=float(preset["lora_alpha"]), clip_low=KIMI25_PRESET["clip_epsilon_low"],  # not the demo's wider range
        clip_high=KIMI25_PRESET["clip_epsilon_high"], max_grad_norm=preset["max_grad_norm"],
        adam_beta1=defaults["adam_beta1"].default, adam_beta2=defaults["adam_beta2"].default,
    )


SHARED = _shared_settings()


@dataclass(frozen=True)
class Setting:
    """One matched training configuration (the same numbers are given to both trainers). Defaults
    come from the package (`SHARED`); top_p stays 1.0 because TRL and we must sample identically."""

    name: str
    beta: float = 0.0
    prompts_per_iteration: int = SHARED["prompts_per_iteration"]  # x group size = episodes per rollout batch
    group_size: int = SHARED["group_size"]
    steps_per_rollout: int = SHARED["steps_per_rollout"]  # optimizer steps per rollout batch (off-policy after the first)
    max_new_tokens: int = SHARED["max_new_tokens"]
    learning_rate: float = SHARED["learning_rate"]
    lora_r: int = SHARED["lora_r"]
    lora_alpha: float = SHARED["lora_alpha"]
    clip_low: float = SHARED["clip_low"]
    clip_high: float = SHARED["clip_high"]
    adam_beta1: float = SHARED["adam_beta1"]
    adam_beta2: float = SHARED["adam_beta2"]
    max_grad_norm: float = SHARED["max_grad_norm"]
    temperature: float = 1.0
    top_p: float = 1.0
    warmup_iterations: int = 2
    timed_iterations: int = 6
    seed: int = 0

    @property
    def episodes_per_step(self) -> int:
        return self.prompts_per_iteration * self.group_size // self.steps_per_rollout

    @property
    def iterations(self) -> int:
        return self.warmup_iterations + self.timed_iterations


SETTINGS: dict[str, Setting] = {
    "gspo_beta0": Setting("gspo_beta0", beta=0.0),
    "gspo_beta0.04": Setting("gspo_beta0.04", beta=0.04),
}


def setting_from_json(text: str) -> Setting:
    return Setting(**json.loads(text))


def setting_to_json(setting: Setting) -> str:
    return json.dumps(asdict(setting))


def quick(setting: Setting) -> Setting:
    """`--quick` of run_benchmarks.py: the same work per iteration, 1 warm-up + 2 timed iterations."""
    return replace(setting, warmup_iterations=1, timed_iterations=2)


def smoke(setting: Setting) -> Setting:
    """`--quick` of the single-run scripts: seconds of work (2 prompts x 2, 8 tokens, 1 step, 2 iterations)."""
    return replace(setting, prompts_per_iteration=2, group_size=2, steps_per_rollout=1, max_new_tokens=8,
                   warmup_iterations=1, timed_iterations=1)


# --- result names ---------------------------------------------------------------------------------


def git_commit() -> str:
    """Short commit of the working tree, with `-dirty` when tracked files differ from it."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "nogit"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def result_stem(experiment: str, model: str, quick: bool = False) -> str:
    """`EXPERIMENT[_quick]_MODEL_COMMIT`: what a result file measured (a model path is named by its last part)."""
    model = Path(model).name if ("/" in model or os.sep in model) else model
    return f"{experiment}{'_quick' if quick else ''}_{model}_{git_commit()}"


# --- models ---------------------------------------------------------------------------------------


def bench_cache() -> Path:
    root = os.environ.get("STATESET_AGENTS_CACHE") or Path.home() / ".cache" / "stateset_agents"
    return Path(root) / "bench_models"


def build_causal_lm(directory: Path, spec) -> None:
    """A seeded `DeepseekV3ForCausalLM` with the tiny Kimi-K2.5's text config and tokenizer."""
    import torch
    from transformers import DeepseekV3ForCausalLM, GenerationConfig

    from stateset_agents.embedded.tokenizer_corpus import default_tokenizer_corpus, tool_argument_words
    from stateset_agents.models.tiny_kimi import build_tokenizer, kimi_config

    tokenizer = build_tokenizer(default_tokenizer_corpus(), spec.vocab_size, whole_words=tool_argument_words())
    text_config = kimi_config(spec, tokenizer).text_config
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    text_config.eos_token_id = end_of_turn
    torch.manual_seed(spec.seed)
    model = DeepseekV3ForCausalLM(text_config).eval()
    model.generation_config = GenerationConfig(eos_token_id=[end_of_turn], pad_token_id=text_config.pad_token_id,
                                               bos_token_id=text_config.bos_token_id)
    tokenizer.eos_token = "<|im_end|>"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def ensure_model(name: str) -> Path:
    """Directory of bench model `name`, built on first use (fingerprinted by its spec)."""
    from stateset_agents.models.tiny_kimi import TinyKimiSpec

    spec = replace(TinyKimiSpec(), **MODELS[name].spec_overrides)
    fingerprint = "bench-v1|" + spec.fingerprint()
    target = bench_cache() / name
    info = target / "bench_fingerprint.txt"
    if info.exists() and info.read_text() == fingerprint:
        return target
    target.mkdir(parents=True, exist_ok=True)
    build_causal_lm(target, spec)
    info.write_text(fingerprint)
    return target


def parameter_count(model_dir: Path) -> int:
    """Parameters of the saved model (from the safetensors headers, no load)."""
    import struct

    total = 0
    for path in Path(model_dir).glob("*.safetensors"):
        with open(path, "rb") as handle:
            header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
        for key, entry in header.items():
            if key != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
    return total


# --- prompts and reward ---------------------------------------------------------------------------


def prompt_pool() -> list[list[dict]]:
    """Single-turn conversations: [system, opening user message] of customer_service train scenarios."""
    from stateset_agents.tasks.registry import get_task

    scenarios = get_task("customer_service").train_scenarios()
    return [[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": s["opening"]}]
            for s in scenarios]


def prompt_schedule(setting: Setting) -> list[list[dict]]:
    """The prompts of every iteration, in order: `iterations * prompts_per_iteration` conversations."""
    import random

    pool = prompt_pool()
    rng = random.Random(setting.seed)
    order: list[int] = []
    while len(order) < setting.iterations * setting.prompts_per_iteration:
        epoch = list(range(len(pool)))
        rng.shuffle(epoch)
        order.extend(epoch)
    return [pool[i] for i in order[: setting.iterations * setting.prompts_per_iteration]]


def parity_reward(completion_ids: list[int]) -> float:
    """Fraction of sampled tokens with an even id (0 for an empty completion)."""
    return sum(1 for token in completion_ids if token % 2 == 0) / max(len(completion_ids), 1)


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def versions() -> dict[str, str]:
    import platform

    import peft
    import torch
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "peft": peft.__version__}
    try:
        import trl

        out["trl"] = trl.__version__
    except ImportError:
        out["trl"] = "not installed"
    return out


def cpu_name() -> str:
    """The CPU model for results' machine notes (/proc/cpuinfo, else platform's guess)."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
