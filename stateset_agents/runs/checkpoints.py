"""Atomic training checkpoints: adapter/model weights, optimizer, scheduler, RNG, trainer state.

Layout of one checkpoint, `output_dir/checkpoints/iter_{iteration:06d}/`:

- `adapter/`: every LoRA adapter of a `PeftModel` in PEFT format (`save_pretrained`; the
  `default` adapter at the top, any other, e.g. a frozen previous-task teacher, in `adapter/NAME/`),
  or `model/` (safetensors, `save_pretrained`) for a plain model (full fine-tuning);
- `optimizer.pt`, `scheduler.pt`: `state_dict()`s; `rng.pt`: Python `random`, NumPy, torch CPU
  and (when available) CUDA generator states;
- `trainer_state.json`: `{"iteration": ..., **trainer_state}` (must be JSON-serialisable);
- one entry per `extra_files` name, written by its callback (e.g. a replay buffer);
- `COMPLETE`: written last.

Crash safety: everything is written into a hidden sibling `.tmp-iter_*` directory, every file
is fsync'ed, `COMPLETE` is written, and only then is the directory renamed into place with
`os.replace` (atomic on POSIX). `latest_checkpoint` only returns directories named `iter_*`
that hold `COMPLETE`, so a crash at any point leaves the previous checkpoint as the latest.
Older checkpoints beyond `keep_last` are removed after the new one is in place (renamed away
first, so a crash mid-delete never leaves a half-deleted directory that looks complete).

Loading: `optimizer.pt`, `scheduler.pt` and `rng.pt` are files this module wrote and are read
with `torch.load(weights_only=True)` (tensors and plain containers only; the NumPy RNG state is
stored as a tensor for that reason). Only load checkpoints you produced yourself.
One writer per output_dir is assumed (in distributed training, save from rank 0 only).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

CHECKPOINTS_DIRNAME = "checkpoints"
COMPLETE_MARKER = "COMPLETE"
ADAPTER_DIRNAME = "adapter"
MODEL_DIRNAME = "model"
TRAINER_STATE_FILE = "trainer_state.json"
RESERVED_NAMES = {ADAPTER_DIRNAME, MODEL_DIRNAME, "optimizer.pt", "scheduler.pt", "rng.pt",
                  TRAINER_STATE_FILE, COMPLETE_MARKER}
_CHECKPOINT_NAME = re.compile(r"iter_(\d{6,})")
_TEMP_PREFIXES = (".tmp-", ".trash-")

ExtraFiles = Mapping[str, Callable[[Path], None]]


# ----------------------------------------------------------------------------- locating


def checkpoint_dir(output_dir: str | Path, iteration: int) -> Path:
    """Where the checkpoint of `iteration` lives: output_dir/checkpoints/iter_{iteration:06d}."""
    return Path(output_dir) / CHECKPOINTS_DIRNAME / f"iter_{iteration:06d}"


def is_complete(path: str | Path) -> bool:
    """True for a directory that holds the COMPLETE marker."""
    return (Path(path) / COMPLETE_MARKER).is_file()


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints under output_dir/checkpoints, oldest iteration first."""
    root = Path(output_dir) / CHECKPOINTS_DIRNAME
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _CHECKPOINT_NAME.fullmatch(path.name)
        if match and path.is_dir() and is_complete(path):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (temporary and incomplete directories ignored), or None."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


# ----------------------------------------------------------------------------- saving


def save_checkpoint(output_dir: str | Path, iteration: int, model: Any, optimizer: Any,
                    scheduler: Any, trainer_state: Mapping[str, Any],
                    extra_files: ExtraFiles | None = None, keep_last: int | None = 2) -> Path:
    """Atomically write the checkpoint of `iteration` and prune older ones; returns its path.

    `extra_files` maps a name to a callback that is given `checkpoint_dir / name` and writes
    a file or directory there. `keep_last=None` keeps every checkpoint. On any error the
    temporary directory is removed and the previous checkpoints are untouched.
    """
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 or None (keep all), got {keep_last}")
    _check_extra_names(extra_files or {})
    final = checkpoint_dir(output_dir, iteration)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(final.parent)
    temp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        _write_contents(temp, iteration, model, optimizer, scheduler, trainer_state,
                        extra_files or {})
        _fsync_tree(temp)
        _write_marker(temp, iteration)
        _move_into_place(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if keep_last is not None:
        prune_checkpoints(output_dir, keep_last)
    return final


def _check_extra_names(extra_files: ExtraFiles) -> None:
    for name in extra_files:
        if name in RESERVED_NAMES or Path(name).name != name or name.startswith("."):
            raise ValueError(f"extra_files name {name!r} must be a plain file name and not one of "
                             f"{sorted(RESERVED_NAMES)}")


def _write_contents(directory: Path, iteration: int, model: Any, optimizer: Any, scheduler: Any,
                    trainer_state: Mapping[str, Any], extra_files: ExtraFiles) -> None:
    state = {"iteration": iteration, **{k: v for k, v in trainer_state.items() if k != "iteration"}}
    (directory / TRAINER_STATE_FILE).write_text(_state_json(state), encoding="utf-8")
    save_model_weights(model, directory)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    if scheduler is not None:
        torch.save(scheduler.state_dict(), directory / "scheduler.pt")
    torch.save(capture_rng_state(), directory / "rng.pt")
    for name, write in extra_files.items():
        write(directory / name)


def _state_json(state: Mapping[str, Any]) -> str:
    try:
        return json.dumps(state, indent=2)
    except TypeError as err:
        raise TypeError(f"trainer_state must be JSON-serialisable (plain dicts, lists, numbers, "
                        f"strings): {err}") from err


def _unwrap(model: Any) -> Any:
    """The model inside a DistributedDataParallel-style wrapper."""
    return getattr(model, "module", model)


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def save_model_weights(model: Any, directory: Path) -> Path:
    """Adapters of a PeftModel into directory/adapter, else the whole model into directory/model."""
    model = _unwrap(model)
    if _is_peft(model):
        target = directory / ADAPTER_DIRNAME
        model.save_pretrained(str(target))
    else:
        target = directory / MODEL_DIRNAME
        # Current parameter names (no reverse conversion to the hub layout), so the files
        # load back with load_state_dict into the same class.
        model.save_pretrained(str(target), save_original_format=False)
    return target


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA RNG states, in a weights_only-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                  float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under root (directories after their contents)."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for filename in filenames:
            _fsync_path(Path(dirpath) / filename)
        _fsync_path(Path(dirpath))


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def _write_marker(directory: Path, iteration: int) -> None:
    marker = directory / COMPLETE_MARKER
    marker.write_text(json.dumps({"iteration": iteration, "time": time.time()}) + "\n")
    _fsync_path(marker)
    _fsync_path(directory)


def _move_into_place(temp: Path, final: Path) -> None:
    """os.replace temp -> final; an existing final (same iteration saved again) is moved away."""
    old = None
    if final.exists():
        old = final.parent / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(temp, final)
    _fsync_path(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_temporaries(root: Path) -> None:
    """Delete temporary directories left behind by a crashed save or prune."""
    for path in root.iterdir():
        if path.name.startswith(_TEMP_PREFIXES) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def prune_checkpoints(output_dir: str | Path, keep_last: int) -> list[Path]:
    """Remove all but the newest `keep_last` complete checkpoints; returns the removed paths."""
    removed = []
    for path in list_checkpoints(output_dir)[:-keep_last]:
        trash = path.parent / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        removed.append(path)
    return removed


# ----------------------------------------------------------------------------- loading


def load_checkpoint(path: str | Path, model: Any, optimizer: Any = None, scheduler: Any = None,
                    restore_rng: bool = True) -> dict[str, Any]:
    """Load weights (and optimizer, scheduler, RNG states) from a complete checkpoint.

    The model must have the structure it had when saved: for a PeftModel, the same adapters
    (create a continual-learning teacher adapter before loading). Returns the trainer state
    (`iteration` included).
    """
    path = Path(path)
    if not is_complete(path):
        hint = (f"; did you mean latest_checkpoint({str(path)!r})?"
                if (path / CHECKPOINTS_DIRNAME).is_dir() else "")
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {COMPLETE_MARKER} "
                                f"marker){hint}")
    load_model_weights(model, path)
    if optimizer is not None:
        optimizer.load_state_dict(_load_torch(path / "optimizer.pt"))
    if scheduler is not None:
        scheduler.load_state_dict(_load_torch(path / "scheduler.pt"))
    if restore_rng:
        restore_rng_state(_load_torch(path / "rng.pt"))
    return json.loads((path / TRAINER_STATE_FILE).read_text(encoding="utf-8"))


def _load_torch(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} is missing (was it saved with "
                                "optimizer/scheduler None?)")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model_weights(model: Any, path: Path) -> None:
    """Load directory `path`'s adapter/ into a PeftModel, or model/ into a plain model."""
    model = _unwrap(model)
    if _is_peft(model):
        if not (path / ADAPTER_DIRNAME).is_dir():
            raise FileNotFoundError(f"{path} holds no {ADAPTER_DIRNAME}/ (saved from a plain "
                                    "model?) but the model to load into is a PeftModel")
        _load_adapters(model, path / ADAPTER_DIRNAME)
    else:
        if not (path / MODEL_DIRNAME).is_dir():
            raise FileNotFoundError(f"{path} holds no {MODEL_DIRNAME}/ (saved from a PeftModel?) "
                                    "but the model to load into is not a PeftModel")
        _load_full_model(model, path / MODEL_DIRNAME)


def _saved_adapters(adapter_dir: Path) -> dict[str, Path]:
    """Adapter name -> weights file, following PeftModel.save_pretrained's layout."""
    saved = {}
    if (adapter_dir / "adapter_model.safetensors").is_file():
        saved["default"] = adapter_dir / "adapter_model.safetensors"
    for sub in adapter_dir.iterdir():
        if sub.is_dir() and (sub / "adapter_model.safetensors").is_file():
            saved[sub.name] = sub / "adapter_model.safetensors"
    return saved


def _active_adapters(model: Any) -> list[str]:
    active = model.active_adapter
    return [active] if isinstance(active, str) else list(active)


def _load_adapters(model: Any, adapter_dir: Path) -> None:
    """Copy each saved adapter's weights into the model and verify they match the files."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    saved = _saved_adapters(adapter_dir)
    present = set(model.peft_config)
    unknown = sorted(set(saved) - present)
    if unknown:
        raise ValueError(f"checkpoint holds adapters {unknown} that the model lacks (it has "
                         f"{sorted(present)}); add them (e.g. the teacher adapter) before loading")
    missing_active = [name for name in _active_adapters(model) if name not in saved]
    if missing_active:
        raise ValueError(f"active adapter(s) {missing_active} are not in checkpoint "
                         f"{adapter_dir} (it holds {sorted(saved)})")
    for name in sorted(present - set(saved)):
        logger.warning("adapter %r is not in checkpoint %s; left as it is", name, adapter_dir)
    for name, weights_file in saved.items():
        weights = load_file(str(weights_file))
        set_peft_model_state_dict(model, weights, adapter_name=name)
        _verify_adapter(get_peft_model_state_dict(model, adapter_name=name), weights, name)


def _verify_adapter(current: Mapping[str, torch.Tensor], saved: Mapping[str, torch.Tensor],
                    name: str) -> None:
    """Fail loudly unless the model's adapter now equals the saved tensors exactly."""
    if set(current) != set(saved):
        diff = sorted(set(current) ^ set(saved))[:5]
        raise ValueError(f"adapter {name!r} does not match the checkpoint (differing keys, "
                         f"e.g. {diff}); was it created with the same LoRA config?")
    for key, tensor in saved.items():
        if not torch.equal(current[key].detach().cpu().to(tensor.dtype), tensor):
            raise ValueError(f"adapter {name!r}: {key} differs from the checkpoint after loading")


def _load_full_model(model: Any, model_dir: Path) -> None:
    """load_state_dict from every safetensors shard; only tied parameters may be absent."""
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors files in {model_dir}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"checkpoint has weights the model lacks: {result.unexpected_keys[:5]}")
    current = model.state_dict()
    loaded_ptrs = {tensor.data_ptr() for key, tensor in current.items() if key in state}
    untied = [key for key in result.missing_keys if current[key].data_ptr() not in loaded_ptrs]
    if untied:
        raise ValueError(f"checkpoint lacks weights of the model: {untied[:5]}")


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of `capture_rng_state` (CUDA states restored for the devices present)."""
    random.setstate(_as_python_state(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


def _as_python_state(state: Any) -> tuple:
    """random.setstate wants tuples; weights_only loading may hand back lists."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
