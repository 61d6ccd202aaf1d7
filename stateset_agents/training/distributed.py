"""Data-parallel training on several processes, through `accelerate` (DDP; FSDP2/ZeRO-3 by its config).

Launch the unchanged script or CLI with `accelerate launch --num_processes N ...` (on a machine
without GPUs add `--multi_gpu`: that flag picks accelerate's torchrun launcher, and the trainer
then runs every rank on the CPU with the gloo backend), or with `torchrun --nproc_per_node N`.
One process (no `WORLD_SIZE` in the environment, or 1) runs exactly as before.

How an iteration is shared, and why the result equals one process's:
- **Scenarios.** Every rank draws the same scenarios (the samplers are seeded by the run seed,
  not the rank), so every rank knows the whole iteration's episode list.
- **Rollouts, by whole groups.** Group g goes to rank g mod N. A group's advantages are
  normalised over all its members' rewards, so a group is never split; round-robin spreads the
  groups evenly. Each episode samples with its own seed (`trainer.episode_seed`, fixed by its
  place in the run), so a rank samples exactly the tokens one process would for that episode.
- **One global batch on every rank.** After rollouts and rewards, the trajectories and reward
  results are gathered to every rank (`gather_object`). Advantages, metrics, the replay buffer
  and its draws are then computed from identical data on every rank: metrics are those of the
  whole batch (not rank 0's share), and the continual-learning replay buffer is *replicated*
  (every rank holds the same buffer and draws the same replay), which costs memory but keeps
  its sampling identical to one process; the LwF teacher is a frozen adapter on every rank.
- **Updates.** The minibatch split is drawn from the same generator on every rank. Rank r scores
  the episodes at positions r, r+N, ... of each minibatch; its loss is weighted by its episodes'
  share of the *global* minibatch, times N because DDP averages gradients over ranks, so the
  reduced gradient is the one-process gradient (up to float summation order). A rank left with no
  episode in a minibatch still joins the reduction with a zero-weighted pass.
- **Files.** Only rank 0 writes config, metrics, W&B, checkpoints, plots and the report; every
  rank reads the checkpoint on resume (all ranks hold the same state at a checkpoint).
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from typing import Any, Iterator, Sequence


def launched_world_size() -> int:
    """Processes the launcher started (torchrun / accelerate set WORLD_SIZE); 1 without a launcher."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """Rank 0 of a launched run, or the only process (before any process group exists: RANK)."""
    return os.environ.get("RANK", "0") == "0"


def sharded_engine_requested() -> str | None:
    """'FSDP' / 'DeepSpeed' when `accelerate launch` was given such a config (it says so in the environment)."""
    flag = lambda name: os.environ.get(name, "").lower() in ("1", "true", "yes")  # noqa: E731
    if flag("ACCELERATE_USE_FSDP"):
        return f"FSDP{os.environ.get('FSDP_VERSION', '')}"
    if flag("ACCELERATE_USE_DEEPSPEED"):
        return "DeepSpeed"
    return None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class DataParallel:
    """This process's rank in a data-parallel run, and the few collectives the trainer needs."""

    def __init__(self, device: str = "auto"):
        self.accelerator = None
        self.world_size = launched_world_size()
        self.rank = 0
        sharded = sharded_engine_requested()
        if sharded and not _cuda_available():
            # accelerate would quietly fall back to plain DDP on the CPU: refuse instead of training
            # with a different engine than the config names
            raise RuntimeError(
                f"the accelerate config asks for {sharded}, which this trainer runs on GPUs only (bf16, NCCL), and "
                f"this machine has no CUDA device. On CPU use plain data parallel: accelerate launch --config_file "
                f"configs/accelerate/multi_process_cpu.yaml ... (or --multi_gpu --num_processes N)")
        if self.world_size > 1:
            import torch
            from accelerate import Accelerator

            # LoRA targets stay inside the text model (models/lora_targets.py), so every trainable
            # parameter is used by every forward and DDP's defaults hold (no unused-parameter search)
            self.accelerator = Accelerator(cpu=device == "cpu" or not torch.cuda.is_available())
            if self.accelerator.num_processes != self.world_size:
                raise RuntimeError(
                    f"WORLD_SIZE={self.world_size} but accelerate set up {self.accelerator.num_processes} process(es) "
                    f"({self.accelerator.distributed_type}): launch with `accelerate launch --multi_gpu "
                    f"--num_processes N` (CPU too) or `torchrun --nproc_per_node N`")
            self.rank = self.accelerator.process_index

    def describe(self) -> str:
        state = self.accelerator.state
        backend = getattr(state, "backend", None)
        return (f"{self.world_size} processes, {state.distributed_type.value} on {self.accelerator.device.type}"
                f"{f' ({backend})' if backend else ''}, groups assigned round-robin, rank 0 writes")

    @property
    def enabled(self) -> bool:
        return self.accelerator is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> str | None:
        """The device this rank trains on when distributed (None: the config decides)."""
        return str(self.accelerator.device) if self.enabled else None

    def owns_group(self, group_id: int) -> bool:
        return group_id % self.world_size == self.rank

    def share(self, items: Sequence) -> list:
        """This rank's share of a list every rank holds: positions rank, rank+N, ..."""
        return list(items[self.rank::self.world_size])

    def gather(self, items: list) -> list:
        """Every rank's `items`, concatenated in rank order, on every rank."""
        if not self.enabled:
            return list(items)
        from accelerate.utils import gather_object

        return list(gather_object(list(items)))

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on some rank."""
        if not self.enabled:
            return flag
        import torch

        value = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(value, reduction="sum").item() > 0)

    def wrap(self, model):
        """The model the backward pass goes through: DDP (or FSDP/DeepSpeed, by accelerate's config)."""
        return self.accelerator.prepare_model(model) if self.enabled else model

    def sync_context(self, model, sync: bool):
        """Gradients reduce across ranks only on the backward run with `sync` (the last micro-batch)."""
        if not self.enabled or sync:
            return nullcontext()
        return self.accelerator.no_sync(model)

    def barrier(self) -> None:
        if self.enabled:
            self.accelerator.wait_for_everyone()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block (e.g. writes a file) before the others read what it wrote."""
        if not self.enabled:
            yield
            return
        with self.accelerator.main_process_first():
            yield

    def end(self) -> None:
        if self.enabled:
            self.accelerator.end_training()


def gather_in_order(parallel: DataParallel, indexed: list[tuple[int, Any]], total: int) -> list[Any]:
    """Items computed on the ranks as (global index, item) pairs, put back in global order on every rank."""
    gathered = dict(parallel.gather(indexed))
    missing = [i for i in range(total) if i not in gathered]
    if missing:
        raise RuntimeError(f"data-parallel gather lost items {missing[:10]} of {total}")
    return [gathered[i] for i in range(total)]


class SilentLogger:
    """What ranks other than 0 log to: nothing (rank 0's logger has the whole batch's metrics)."""

    def __enter__(self) -> "SilentLogger":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def log(self, metrics: dict) -> None:
        pass

    def log_event(self, message: str) -> None:
        pass
