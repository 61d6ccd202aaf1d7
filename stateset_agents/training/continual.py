"""Continual learning: a replay buffer of earlier tasks and learning without forgetting (LwF).

`continual_strategy` (TrainingConfig) picks what is on: "none", "replay", "lwf" or "replay_lwf".
Tasks follow each other as `config.task_sequence` (`task_iterations` on each, or equal shares).

Replay (Rolnick et al. 2019, "Experience Replay for Continual Learning"; CLEAR):
  - Every scored episode of every iteration goes into a `ReplayBuffer` of at most
    `replay_buffer_size` episodes, kept by reservoir sampling (Vitter's algorithm R): after n
    episodes have been offered, each one of them is in the buffer with probability capacity / n,
    so every task stays represented in proportion to the episodes it produced, however long ago.
  - An episode is stored with its exact tokens (per assistant turn: prompt ids, sampled ids, the
    sampler's logprobs, image tensors if any), its reward, its group advantage and its task.
  - Each update batch of N fresh episodes gets R = round(N * replay_ratio / (1 - replay_ratio))
    replayed episodes of *other* tasks than the current one (fewer if the buffer holds fewer), so
    replayed / (fresh + replayed) = replay_ratio. Fresh episodes are never dropped: replay adds
    compute (the update batch grows by 1 / (1 - replay_ratio)). While training the first task
    there is nothing to replay.

  Replayed data is off-policy. A replayed episode keeps its stored advantage and its stored
  sampling logprobs, which are the *behaviour* policy's log π_b (the policy that generated it,
  possibly many updates ago). The trainer scores it under the current policy like any other
  row, so the GSPO sequence ratio s = exp(mean_t(log π_θ − log π_b)) is the importance weight
  that corrects for the policy having changed, and the clipped objective
  min(s·A, clip(s, 1−ε_low, 1+ε_high)·A) bounds what a stale episode can do:
    * if the policy has moved *in the direction the advantage asks* (s > 1+ε_high with A > 0,
      or s < 1−ε_low with A < 0), the clip is active and the episode gives no policy gradient;
    * if it has moved *against* it (a good old episode became unlikely, s < 1 with A > 0; a bad
      one became likely, s > 1 with A < 0), the unclipped term s·A pulls it back, weighted by s.
      This is the anti-forgetting signal. For A < 0 the ratio is not bounded above (as in PPO);
      it is a per-token geometric mean, so it stays moderate, and `max_grad_norm` bounds the step.
  tests/test_continual.py checks both cases on a replayed row.

Learning without forgetting (Li & Hoiem 2016, adapted to RL fine-tuning as a policy KL):
  - At each task boundary (the first iteration of task k > 0) the current LoRA adapter is copied
    into a second adapter named "teacher" on the same PEFT model (no copy of the base model),
    frozen (requires_grad=False, never in the optimizer). Later boundaries refresh it.
  - Every row of the update batch (fresh episodes of the new task and replayed ones) is scored
    once under the teacher, without gradient, before the optimizer steps.
  - The loss gains kl_penalty_beta * KL_teacher (computed with every other term by
    `losses.policy_loss`, teacher_logprobs_B_T), where KL_teacher is the k3 estimator of
    KL(π_θ || π_teacher) per sampled token, exp(t − l) − (t − l) − 1 with l = log π_θ and
    t = log π_teacher (≥ 0, zero iff equal), masked to the sampled (assistant) tokens only,
    averaged over each episode's tokens, then over episodes (like the policy term). k3 is an
    unbiased KL estimate for tokens sampled from π_θ; fresh tokens are sampled from π_old ≈ π_θ,
    replayed tokens from an older policy, for which it is a surrogate that is still zero exactly
    when π_θ = π_teacher on those tokens and positive otherwise.

  - `lwf_rows="replayed"` (with replay_lwf) applies the teacher KL to the replayed episodes only: distillation
    on the old tasks' own data (as CLEAR's behaviour cloning and dark experience replay do), so the new task's
    episodes answer to the policy term alone. Where two tasks share a surface and differ in the right action,
    the KL on the new task's rows pulls against exactly what it must learn. The other rows count as KL 0 in
    the mean over sequences (`losses.policy_loss`, teacher_rows_B).
  - `lwf_divergence="forward"` estimates KL(π_teacher || π_θ) instead: k3 with the roles swapped,
    exp(l − t) − (l − t) − 1, the estimator for tokens sampled from the teacher's side, which replayed
    tokens are (sampled by an earlier task's policy; distillation and CLEAR's behaviour cloning use
    this direction). Its gradient in l, exp(l − t) − 1, is bounded by 1 where the policy has made a
    teacher token unlikely; the reverse k3's, exp(t − l) − 1, grows exponentially there, so on
    replayed rows a single forgotten token can dominate a step (seen at 250 in the forgetting runs).

Simplifications: the buffer replays whole episodes (all turns, one GSPO sequence); stored
advantages are not recomputed; the teacher is a snapshot at the boundary (no EMA).
"""

from __future__ import annotations

import copy
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from stateset_agents.rollout.encoding import EncodedPrompt
from stateset_agents.training.optimizer_step import PolicyRow

__all__ = [
    "ReplayTurn", "ReplayEpisode", "ReplayBuffer", "TeacherAdapter", "ContinualLearner",
    "replay_count", "episodes_from_trajectories", "rows_from_replay", "TEACHER_ADAPTER",
    "REPLAY_BUFFER_FILE",
]

TEACHER_ADAPTER = "teacher"
REPLAY_BUFFER_FILE = "replay_buffer.pt"


# ----------------------------------------------------------------------------- replay data


@dataclass
class ReplayTurn:
    """One sampled assistant turn, exactly as the sampler saw and produced it.

    Ids and logprobs are kept as tensors (int64 / float64: exact, and ~10x smaller than Python
    lists for a buffer of thousands of multi-turn episodes); lists are accepted and converted.
    """

    prompt_ids: Tensor  # [P] the exact prompt ids the sampler saw
    completion_ids: Tensor  # [C] the sampled ids
    logprobs: Tensor  # [C] behaviour policy's log π_b (the π_old of the importance ratio)
    pixel_values: Tensor | None = None  # [patches, 3, p, p]
    image_grid_thw: Tensor | None = None  # [images, 3]
    temperature: float | None = None  # the logprobs' temperature (None: a buffer saved before it was kept)
    policy_version: int | None = None  # optimizer steps of the policy that sampled it

    def __post_init__(self) -> None:
        self.prompt_ids = torch.as_tensor(self.prompt_ids, dtype=torch.int64).cpu()
        self.completion_ids = torch.as_tensor(self.completion_ids, dtype=torch.int64).cpu()
        self.logprobs = torch.as_tensor(self.logprobs, dtype=torch.float64).cpu()
        if len(self.logprobs) != len(self.completion_ids):
            raise ValueError(f"a replayed turn needs one logprob per sampled token: {len(self.logprobs)} logprobs "
                             f"for {len(self.completion_ids)} tokens")


@dataclass
class ReplayEpisode:
    """A finished, scored episode: its turns, reward, group advantage and task."""

    task: str
    reward: float
    advantage: float
    turns: list[ReplayTurn] = field(default_factory=list)

    def to_state(self) -> dict[str, Any]:
        return {"task": self.task, "reward": float(self.reward), "advantage": float(self.advantage),
                "turns": [_turn_state(t) for t in self.turns]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ReplayEpisode:
        turns = [ReplayTurn(t["prompt_ids"], t["completion_ids"], t["logprobs"], t.get("pixel_values"),
                            t.get("image_grid_thw"), t.get("temperature"), t.get("policy_version"))
                 for t in state["turns"]]
        return cls(str(state["task"]), float(state["reward"]), float(state["advantage"]), turns)


def _turn_state(turn: ReplayTurn) -> dict[str, Any]:
    state: dict[str, Any] = {"prompt_ids": turn.prompt_ids, "completion_ids": turn.completion_ids,
                             "logprobs": turn.logprobs}
    for name in ("pixel_values", "image_grid_thw"):
        value = getattr(turn, name)
        if value is not None:
            state[name] = value.detach().cpu()
    if turn.temperature is not None:
        state["temperature"] = float(turn.temperature)
    if turn.policy_version is not None:
        state["policy_version"] = int(turn.policy_version)
    return state


def episodes_from_trajectories(trajectories: Sequence, advantages: Sequence[float], task: str) -> list[ReplayEpisode]:
    """Replay records of scored trajectories (turns without sampled tokens are dropped)."""
    episodes = []
    for trajectory, advantage in zip(trajectories, advantages):
        turns = [ReplayTurn(t.prompt_ids, t.completion_ids, t.logprobs, t.pixel_values, t.image_grid_thw,
                            t.temperature, t.policy_version)
                 for t in trajectory.turns if t.completion_ids]
        if turns:
            episodes.append(ReplayEpisode(task, float(trajectory.reward), float(advantage), turns))
    return episodes


def rows_from_replay(episodes: Sequence[ReplayEpisode], first_episode: int) -> list[PolicyRow]:
    """Policy rows of replayed episodes: stored tokens, stored advantage, behaviour logprobs as π_old,
    scored at the temperature they were sampled at."""
    rows = []
    for offset, episode in enumerate(episodes):
        for turn in episode.turns:
            if turn.temperature is None:
                raise ValueError("a replayed turn records no sampling temperature; load old buffers through "
                                 "ContinualLearner, which fills it in")
            prompt = EncodedPrompt(turn.prompt_ids.tolist(), turn.pixel_values, turn.image_grid_thw)
            rows.append(PolicyRow(prompt, turn.completion_ids.tolist(), turn.logprobs.tolist(),
                                  first_episode + offset, episode.advantage, temperature=turn.temperature,
                                  policy_version=turn.policy_version, replayed=True))
    return rows


def replay_count(num_fresh: int, replay_ratio: float) -> int:
    """Replayed episodes to add to `num_fresh` fresh ones so that replayed / total = replay_ratio."""
    if not 0.0 <= replay_ratio < 1.0:
        raise ValueError(f"replay_ratio must be in [0, 1), got {replay_ratio}")
    return round(num_fresh * replay_ratio / (1.0 - replay_ratio))


# ----------------------------------------------------------------------------- the buffer


class ReplayBuffer:
    """At most `capacity` episodes, a uniform sample of every episode ever offered (algorithm R).

    `add` offers one episode: the first `capacity` fill the buffer; the n-th after that replaces
    a uniformly chosen slot with probability capacity / n. `sample` draws without replacement.
    The buffer has its own seeded RNG (saved with it), so it never perturbs training's RNGs and
    a resumed run replays the same episodes as an uninterrupted one.
    """

    def __init__(self, capacity: int, seed: int = 0):
        if capacity < 1:
            raise ValueError(f"replay buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.items: list[ReplayEpisode] = []
        self.seen = 0  # episodes offered so far
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, episode: ReplayEpisode) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(episode)
            return
        slot = self._rng.randrange(self.seen)  # uniform in [0, seen)
        if slot < self.capacity:
            self.items[slot] = episode

    def extend(self, episodes: Sequence[ReplayEpisode]) -> None:
        for episode in episodes:
            self.add(episode)

    def task_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.items:
            counts[item.task] = counts.get(item.task, 0) + 1
        return counts

    def sample(self, count: int, exclude_task: str | None = None) -> list[ReplayEpisode]:
        """Up to `count` distinct episodes, uniformly, optionally skipping one task's episodes."""
        pool = [item for item in self.items if item.task != exclude_task]
        if count <= 0 or not pool:
            return []
        return self._rng.sample(pool, min(count, len(pool)))

    # -- persistence -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        return {"version": 1, "capacity": self.capacity, "seen": self.seen,
                "rng": [version, torch.tensor(internal, dtype=torch.int64), gauss],
                "items": [item.to_state() for item in self.items]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"replay buffer in the checkpoint has capacity {state['capacity']}, this run "
                             f"{self.capacity}: resume with the same replay_buffer_size")
        self.seen = int(state["seen"])
        version, internal, gauss = state["rng"]
        self._rng.setstate((int(version), tuple(int(x) for x in internal.tolist()), gauss))
        self.items = [ReplayEpisode.from_state(item) for item in state["items"]]

    def save(self, path: str | Path) -> None:
        torch.save(self.state_dict(), Path(path))

    def load(self, path: str | Path) -> None:
        self.load_state_dict(torch.load(Path(path), map_location="cpu", weights_only=True))


# ----------------------------------------------------------------------------- LwF


class TeacherAdapter:
    """The previous task's policy as a second, frozen LoRA adapter on the same PEFT model.

    `snapshot()` creates the adapter (same LoraConfig as the trained one) on first use and copies
    the trained adapter's current weights into it. `active()` is a context under which forward
    passes use the teacher; it switches back to the trained adapter afterwards and puts every
    parameter's requires_grad back as it was (PEFT's set_adapter re-enables gradients on the
    adapter it activates). The teacher's parameters are never trainable and never in the optimizer.
    """

    def __init__(self, policy, name: str = TEACHER_ADAPTER):
        from peft import PeftModel

        if not isinstance(policy, PeftModel):
            raise TypeError("learning without forgetting keeps the teacher as a LoRA adapter: the policy must be "
                            "a PeftModel (use_lora=True)")
        self.policy = policy
        self.name = name
        self.trained = policy.active_adapter if isinstance(policy.active_adapter, str) else policy.active_adapter[0]

    @property
    def exists(self) -> bool:
        return self.name in self.policy.peft_config

    def create(self) -> None:
        """Add the (frozen) teacher adapter if missing; its weights are whatever PEFT initialises."""
        if self.exists:
            return
        teacher_config = copy.deepcopy(self.policy.peft_config[self.trained])
        teacher_config.inference_mode = True
        with self._keep_requires_grad():
            self.policy.add_adapter(self.name, teacher_config)
        self.policy.set_adapter(self.trained)  # add_adapter leaves the active adapter alone; make sure
        self._freeze()

    @torch.no_grad()
    def snapshot(self) -> None:
        """teacher := the trained adapter's current weights (creating the teacher if needed)."""
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        self.create()
        weights = get_peft_model_state_dict(self.policy, adapter_name=self.trained)
        set_peft_model_state_dict(self.policy, {k: v.detach().clone() for k, v in weights.items()},
                                  adapter_name=self.name)
        self._freeze()

    def parameters(self) -> list[torch.nn.Parameter]:
        marker = f".{self.name}."
        return [p for n, p in self.policy.named_parameters() if marker in n]

    @contextmanager
    def active(self) -> Iterator[None]:
        """Forward passes inside use the teacher adapter; the trained adapter is restored after."""
        with self._keep_requires_grad():
            self.policy.set_adapter(self.name, inference_mode=True)
            try:
                yield
            finally:
                self.policy.set_adapter(self.trained)

    def _freeze(self) -> None:
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    @contextmanager
    def _keep_requires_grad(self) -> Iterator[None]:
        flags = [(p, p.requires_grad) for p in self.policy.parameters()]
        try:
            yield
        finally:
            for parameter, flag in flags:
                parameter.requires_grad_(flag)
            self._freeze()


# ----------------------------------------------------------------------------- trainer glue


class ContinualLearner:
    """What the trainer needs from a continual strategy: record, replay, teacher, checkpoint state."""

    def __init__(self, config, policy, log: Callable[[str], None] = print):
        self.strategy = config.continual_strategy
        self.replay_ratio = config.replay_ratio
        self.kl_beta = config.kl_penalty_beta
        self.temperature = config.effective_temperature  # for buffers saved before turns kept their own
        self.log = log
        self.buffer = ReplayBuffer(config.replay_buffer_size, seed=config.seed) if self.uses_replay else None
        self.teacher = TeacherAdapter(policy) if self.uses_lwf else None
        self.teacher_task: int | None = None  # index of the task whose start made the teacher

    @property
    def uses_replay(self) -> bool:
        return self.strategy in ("replay", "replay_lwf")

    @property
    def uses_lwf(self) -> bool:
        return self.strategy in ("lwf", "replay_lwf")

    @property
    def lwf_active(self) -> bool:
        return self.teacher is not None and self.teacher_task is not None

    def start_task(self, task_index: int, task_name: str) -> None:
        """At the first iteration of task k > 0: freeze the current policy as the teacher."""
        if self.teacher is None or task_index == 0 or self.teacher_task == task_index:
            return
        self.teacher.snapshot()
        self.teacher_task = task_index
        self.log(f"continual: froze the policy as the teacher adapter {self.teacher.name!r} before {task_name}")

    def replay(self, num_fresh: int, task_name: str) -> list[ReplayEpisode]:
        """Episodes of other tasks to mix into an update batch of `num_fresh` fresh episodes."""
        if self.buffer is None:
            return []
        return self.buffer.sample(replay_count(num_fresh, self.replay_ratio), exclude_task=task_name)

    def record(self, trajectories: Sequence, advantages: Sequence[float], task_name: str) -> None:
        if self.buffer is not None:
            self.buffer.extend(episodes_from_trajectories(trajectories, advantages, task_name))

    def metrics(self, num_fresh: int, num_replayed: int) -> dict[str, float]:
        values: dict[str, float] = {}
        if self.buffer is not None:
            values["continual/buffer_size"] = len(self.buffer)
            values["continual/replay_fraction"] = num_replayed / max(num_fresh + num_replayed, 1)
        return values

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "teacher_task": self.teacher_task}

    def load_state(self, state: dict[str, Any] | None) -> None:
        self.teacher_task = (state or {}).get("teacher_task") if self.teacher is not None else None

    def extra_files(self) -> dict[str, Callable[[Path], None]]:
        return {REPLAY_BUFFER_FILE: self.buffer.save} if self.buffer is not None else {}

    def before_load(self, checkpoint: Path) -> None:
        """Create the teacher adapter if the checkpoint holds one, so load_checkpoint can fill it."""
        if self.teacher is not None and (checkpoint / "adapter" / self.teacher.name).is_dir():
            self.teacher.create()

    def after_load(self, checkpoint: Path) -> None:
        if self.buffer is None:
            return
        path = checkpoint / REPLAY_BUFFER_FILE
        if path.is_file():
            self.buffer.load(path)
            older = [t for item in self.buffer.items for t in item.turns if t.temperature is None]
            for turn in older:
                turn.temperature = self.temperature
            if older:
                self.log(f"continual: {len(older)} replayed turns in {path} predate per-turn temperatures; "
                         f"they are scored at this run's temperature {self.temperature}")
        else:
            self.log(f"continual: {checkpoint} holds no replay buffer; starting with an empty one")
