"""Load a policy model and its tokenizer by name or path, with errors a person can act on.

Names resolve in this order: an embedded model (`tiny-kimi-k2.5`), a local directory, a Hugging
Face hub id (local cache first; the network only when `HF_HUB_OFFLINE` is not set). Kimi-K2.5
checkpoints (`model_type: kimi_k25`) load as the native `Kimi_K25ForConditionalGeneration`
(reached through `AutoModelForImageTextToText`, not `AutoModelForCausalLM`); everything else as
a causal LM. `trust_remote_code` is never turned on by us: the caller asks for it explicitly.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stateset_agents.models.embedded_names import embedded_model_path, is_embedded
from stateset_agents.models.vision import ImageProcessorSettings

KIMI_MODEL_TYPES = ("kimi_k25", "kimi_k2")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class ModelNotAvailableError(RuntimeError):
    """The model could not be found locally and could not be downloaded."""


class ModelFilesError(ModelNotAvailableError):
    """The model directory exists but its files cannot be used (bad config.json, missing or damaged weights)."""


class UnsupportedSettingError(RuntimeError):
    """A requested setting (bf16, flash attention, 4-bit, vLLM) is not available on this machine."""


@dataclass
class LoadSettings:
    """How to load the weights. `dtype` / `device` accept "auto"."""

    dtype: str = "auto"
    device: str = "auto"
    attn_implementation: str | None = None
    load_in_4bit: bool = False
    trust_remote_code: bool = False
    extra_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    path: str
    is_kimi: bool
    image_settings: ImageProcessorSettings | None
    device: torch.device


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UnsupportedSettingError(f"device={device!r} was requested but this machine has no CUDA device")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype must be one of auto, {', '.join(table)}; got {dtype!r}")
    if dtype == "float16" and device.type != "cuda":
        raise UnsupportedSettingError("dtype='float16' needs a CUDA device; use float32 (or bfloat16) on CPU")
    return table[dtype]


def _hub_not_available(name: str, reason: str) -> ModelNotAvailableError:
    from huggingface_hub.constants import HF_HUB_CACHE

    return ModelNotAvailableError(
        f"Model {name!r} is not available: {reason}.\n"
        f"  Looked for: an embedded model name, a local directory named {name!r}, and the Hugging Face "
        f"cache at {HF_HUB_CACHE}.\n"
        f"  To make it available: download it where the hub is reachable "
        f"(`hf download {name}`) and copy the cache here, or pass a local directory with --model, "
        f"or use the embedded default model `tiny-kimi-k2.5`."
    )


def resolve_model_path(name_or_path: str) -> str:
    """A local directory holding the model's config.json."""
    if is_embedded(name_or_path):
        return str(embedded_model_path(name_or_path))
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ModelNotAvailableError(f"{local} is a directory but has no config.json")
        return str(local)
    if not HUB_ID.fullmatch(name_or_path):
        raise ModelNotAvailableError(
            f"Model {name_or_path!r} is neither an embedded model (tiny-kimi-k2.5, tiny-kimi-k2.5-base), "
            f"a local directory, nor a hub id of the form owner/name"
        )
    return _download_from_hub(name_or_path)


def _download_from_hub(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not in the cache: fall through to the network, if allowed
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise _hub_not_available(repo_id, "it is not in the local cache and HF_HUB_OFFLINE is set") from None
    try:
        return snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.py", "*.model", "*.txt",
                                                          "*.tiktoken", "*.jinja"])
    except Exception as error:  # network down, repo missing, gated: one clear message, no hub traceback
        raise _hub_not_available(repo_id, f"download failed ({type(error).__name__})") from None


def _read_config(path: str) -> dict[str, Any]:
    config_file = Path(path, "config.json")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ModelFilesError(f"{config_file} is not valid JSON (line {error.lineno}, column {error.colno}: "
                              f"{error.msg}); restore it from the model's original files") from None
    if not isinstance(config, dict):
        raise ModelFilesError(f"{config_file} must hold a JSON object, not {type(config).__name__}")
    return config


def check_weight_files(path: str) -> list[Path]:
    """The directory's safetensors files, each with a readable header covering the whole file.

    A missing or truncated file fails here with the file's name instead of deep inside
    `from_pretrained`. Pickled `.bin` weights are never loaded (they can run code)."""
    from safetensors import safe_open

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in Path(path).glob("*.bin"))
        hint = (f" It has {', '.join(pickled)}: pickled weights are not loaded; convert them to safetensors."
                if pickled else " Copy the model's *.safetensors files there, or pass another --model.")
        raise ModelFilesError(f"{path} has no weights (no *.safetensors file).{hint}")
    for file in files:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as error:  # safetensors raises its own error type for a bad header or a short file
            raise ModelFilesError(f"{file} is truncated or damaged ({error}); download or copy it again") from None
    return files


def _quantization_config(settings: LoadSettings, device: torch.device, raw_config: dict[str, Any]):
    if not settings.load_in_4bit:
        return None
    if raw_config.get("quantization_config"):
        method = raw_config["quantization_config"].get("quant_method", "?")
        raise UnsupportedSettingError(
            f"--use-4bit: this checkpoint is already quantized ({method}); bitsandbytes 4-bit cannot be applied "
            f"on top. Load it as is (its routed experts are INT4) and train LoRA adapters on it."
        )
    if device.type != "cuda":
        raise UnsupportedSettingError(
            "--use-4bit (QLoRA) needs a CUDA GPU and bitsandbytes; this machine has no CUDA device. "
            "Drop --use-4bit (the model loads in float32 on CPU) or use gradient checkpointing to save memory."
        )
    try:
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UnsupportedSettingError("--use-4bit needs bitsandbytes: pip install bitsandbytes") from None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def _check_attention(attn_implementation: str | None, device: torch.device) -> None:
    if attn_implementation == "flash_attention_2":
        if device.type != "cuda":
            raise UnsupportedSettingError("attn_implementation='flash_attention_2' needs a CUDA GPU; use 'sdpa' or 'eager'")
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            raise UnsupportedSettingError("flash_attention_2 needs the flash-attn package: pip install flash-attn") from None


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as error:
        if "trust_remote_code" in str(error) and not trust_remote_code:
            raise ModelNotAvailableError(
                f"The tokenizer in {path} is remote code (Kimi-K2.5's hub tokenizer is tiktoken-based). "
                f"Review it, then pass --trust-remote-code (trust_remote_code=True) to run it."
            ) from None
        raise
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(name_or_path: str, settings: LoadSettings | None = None) -> LoadedModel:
    """Load model + tokenizer (+ image settings for Kimi-K2.5) ready for generation and training."""
    settings = settings or LoadSettings()
    path = resolve_model_path(name_or_path)
    raw_config = _read_config(path)
    check_weight_files(path)
    is_kimi = raw_config.get("model_type") in KIMI_MODEL_TYPES
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    _check_attention(settings.attn_implementation, device)
    kwargs: dict[str, Any] = dict(dtype=dtype, trust_remote_code=settings.trust_remote_code, **settings.extra_kwargs)
    if settings.attn_implementation:
        kwargs["attn_implementation"] = settings.attn_implementation
    quantization = _quantization_config(settings, device, raw_config)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": device.index or 0}
    if is_kimi:
        from transformers import AutoModelForImageTextToText as ModelClass
    else:
        from transformers import AutoModelForCausalLM as ModelClass
    model = ModelClass.from_pretrained(path, **kwargs)
    if quantization is None:
        model.to(device)
    tokenizer = load_tokenizer(path, settings.trust_remote_code)
    image_settings = ImageProcessorSettings.load(path) if is_kimi else None
    return LoadedModel(model, tokenizer, path, is_kimi, image_settings, device)
