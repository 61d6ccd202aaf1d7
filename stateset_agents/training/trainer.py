"""The GSPO trainer: rollouts -> rewards -> group advantages -> several clipped minibatch updates.

One outer iteration, top to bottom (`GSPOTrainer.iteration`):
  1. draw `scenarios_per_iteration` scenarios of the current task;
  2. run `num_generations` episodes of each (one group per scenario), all live conversations
     batched into one generation call per step (`rollout_concurrency` bounds the batch);
  3. score every trajectory with the reward function; group-normalise into advantages (groups
     whose rewards are all equal carry no signal and are counted);
  4. split the batch into minibatches and take one optimizer step each, scoring the exact rollout
     tokens under the current policy; π_old is the sampler's logprob (exact).
Continual learning (`continual_strategy`, training/continual.py) hooks in at three points: a task
boundary freezes the policy as the LwF teacher adapter; the update batch mixes in replayed
episodes of earlier tasks (scored off-policy through the GSPO ratio); the loss adds the
teacher KL. The replay buffer and the teacher adapter are part of every checkpoint.
Metrics go to the console, metrics.jsonl and W&B; checkpoints are atomic; `resume=True` picks up
from the latest one and ends with the same weights as an uninterrupted run (on CPU).
Under `accelerate launch` / `torchrun` the same code runs data-parallel: groups are sampled on
the ranks, the batch is gathered, updates are sharded and gradients reduced, rank 0 writes
(training/distributed.py says how, and why the result equals one process's).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from stateset_agents.rollout.agent import Agent, AgentConfig
from stateset_agents.training.continual import ContinualLearner, rows_from_replay
from stateset_agents.training.distributed import DataParallel, SilentLogger, gather_in_order
from stateset_agents.rollout.runner import EpisodeSpec, run_episodes
from stateset_agents.training.evaluation import evaluate, is_success, summarize
from stateset_agents.training.llm_setup import LLMServices
from stateset_agents.rollout.runner import USER_ERROR
from stateset_agents.training.policy import build_optimizer, prepare_policy, reference_context
from stateset_agents.training.run_dir import check_run_directory
from stateset_agents.training.scenario_sampler import ScenarioSampler
from stateset_agents.runs.metrics import reduce_metric
from stateset_agents.training.optimizer_step import (
    MicroBatch, fill_reference_logprobs, make_micro_batch, optimizer_step, rows_from_trajectories, split_episodes,
)


# loss statistics (training/losses.py) -> logged metric names (runs/metrics.py METRIC_DOCS);
# statistics not named here are not logged
METRIC_NAMES = {
    "ratio_mean": "ratio/mean", "ratio_min": "ratio/min", "ratio_max": "ratio/max",
    "clip_frac_low": "clip/low_fraction", "clip_frac_high": "clip/high_fraction",
    "loss_policy": "loss/policy", "kl": "kl/ref", "loss_kl_ref": "loss/kl_ref",
    "kl_teacher": "continual/kl_teacher", "loss_kl_teacher": "loss/kl_teacher", "loss_total": "loss/total",
    "num_tokens": "tokens/trained", "num_sequences": "episodes/trained",
    "importance_weight_mean": "tis/weight_mean", "importance_weight_min": "tis/weight_min",
    "importance_weight_max": "tis/weight_max",
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def episode_seed(run_seed: int, iteration: int, group: int, member: int) -> int:
    """The sampling seed of one episode: fixed by its place in the run, not by who samples it or with what."""
    return ((run_seed * 1_000_003 + iteration) * 1_000_003 + group) * 1_000_003 + member


def agent_config_for(config, device: str | None = None) -> AgentConfig:
    return AgentConfig(
        model_name=config.model_name,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        trust_remote_code=config.trust_remote_code,
        max_prompt_tokens=config.max_prompt_tokens,
        model_kwargs={
            "chat_template_kwargs": {"thinking": config.thinking},
            "dtype": config.dtype,
            "device": device or config.device,
            "attn_implementation": config.attn_implementation,
            "load_in_4bit": config.use_4bit,
        },
    )


@dataclass
class TrainingResult:
    output_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    final_eval: dict[str, Any] | None = None


class GSPOTrainer:
    """Trains an agent with GSPO (or GRPO / GSPO-token) on one task or a sequence of tasks."""

    def __init__(self, config, *, agent: Agent | None = None, reward_fn=None, log: Callable[[str], None] = print):
        from stateset_agents.tasks.file_domain import domain_notes
        from stateset_agents.tasks.registry import get_task

        self.config = config
        self.parallel = DataParallel(config.device)  # one process unless launched by accelerate/torchrun
        self.log = log = log if self.parallel.is_main else (lambda message: None)
        self.output_dir = Path(config.output_dir)
        self.tasks = [_with_system_prompt(get_task(name), config.system_prompt) for name in config.task_sequence]
        # before the model loads (minutes for a real checkpoint) and before anything is written
        for change in check_run_directory(config):
            log(f"resume: {change} (allowed on resume; recorded in config.yaml)")
        for note in domain_notes(self.tasks, self.output_dir, resume=config.resume, write=self.parallel.is_main):
            log(note)  # a file domain's digest (domains.json): what the run trained on, changes on resume
        self.parallel.barrier()  # every rank has checked the directory before rank 0 writes into it
        if self.parallel.enabled:
            log(f"data parallel: {self.parallel.describe()}")
        self.custom_reward = reward_fn
        # the LLM customer and judge, and every task's reward: built (endpoints checked, a `reward: module:Class`
        # imported) before the model loads, so a bad setting fails in seconds
        self.llm = LLMServices(config, self.output_dir, device=self.parallel.device or config.device,
                               rank=self.parallel.rank, custom_reward=reward_fn, log=log)
        for task in self.tasks:
            self.llm.reward_for(task)
        seed_everything(config.seed)
        self.agent = agent or Agent(agent_config_for(config, device=self.parallel.device))
        self.policy = prepare_policy(self.agent.model, config, log)
        self.agent.model = self.policy
        self.reference = reference_context(self.policy, config, log) if config.kl_beta > 0 else None
        self.optimizer, make_scheduler = build_optimizer(self.policy, config)
        self.train_model = self.parallel.wrap(self.policy)  # what the backward runs through (DDP when distributed)
        # π_old from the trainer's forward when another engine samples (its kernels differ from ours)
        self.recompute_old_logprobs = (config.recompute_old_logprobs if config.recompute_old_logprobs is not None
                                       else config.use_vllm)
        self.scheduler = make_scheduler(config.num_outer_iterations * self.steps_per_iteration)
        self.continual = ContinualLearner(config, self.policy, log)  # replay buffer / LwF teacher (or nothing)
        self.samplers = [ScenarioSampler(t.train_scenarios(), config.seed + i) for i, t in enumerate(self.tasks)]
        self.iteration_index = 0
        self.history: list[dict[str, Any]] = []
        self.update_generator = torch.Generator().manual_seed(config.seed)
        self.rollout_engine = None
        self.rollout_engine = self._start_vllm() if config.use_vllm else None  # last: nothing after it can fail

    def _start_vllm(self):
        """The vLLM rollout engine (rollout/vllm_engine.py); the agent samples through its client."""
        from stateset_agents.rollout.vllm_engine import TextOnVLLM, VLLMRolloutEngine

        config = self.config
        urls = [config.vllm_base_url] if isinstance(config.vllm_base_url, str) else config.vllm_base_url
        if self.parallel.enabled and not urls:
            raise ValueError("use_vllm under several processes needs running servers (vllm_base_url): a managed "
                             "server per rank would each hold the whole model")
        engine = VLLMRolloutEngine(self.policy, self.agent.tokenizer, self.agent.stop_token_ids,
                                   output_dir=self.output_dir, base_urls=urls, sync=config.vllm_sync,
                                   concurrency=config.rollout_concurrency, max_model_len=config.vllm_max_model_len,
                                   log=self.log)
        engine.version = self.policy_version
        # images stay with transformers on the policy itself (the served export is text-only)
        self.agent.use_backend(TextOnVLLM(engine.generator, self.agent.generator))
        return engine

    def _sync_rollout_weights(self) -> float:
        """After an update (or a resume): the engine samples with the current policy; returns seconds."""
        if self.rollout_engine is None:
            return 0.0
        seconds = self.rollout_engine.sync(self.policy, self.policy_version, write=self.parallel.is_main)
        self.parallel.barrier()  # no rank samples before rank 0 has pushed the weights
        return seconds

    # -- schedule ------------------------------------------------------------------------
    @property
    def episodes_per_iteration(self) -> int:
        return self.config.scenarios_per_iteration * self.config.num_generations

    @property
    def steps_per_iteration(self) -> int:
        return self.config.optimizer_steps_per_rollout(self.episodes_per_iteration)

    def task_index(self, iteration: int) -> int:
        """The task of an outer iteration: `task_iterations` of each in order, or equal shares."""
        counts = self.config.task_iterations
        if counts is None:
            per_task = math.ceil(self.config.num_outer_iterations / len(self.tasks))
            return min(iteration // per_task, len(self.tasks) - 1)
        return min(bisect.bisect_right(list(itertools.accumulate(counts)), iteration), len(self.tasks) - 1)

    def reward_for(self, task):
        """`reward_fn`, else the config's `reward: module:Class`, else the task's own; plus the judge when on."""
        return self.llm.reward_for(task)

    # -- one iteration -------------------------------------------------------------------
    def iteration(self, iteration: int) -> dict[str, Any]:
        config = self.config
        task_id = self.task_index(iteration)
        task = self.tasks[task_id]
        self.continual.start_task(task_id, task.name)  # LwF: freeze the teacher at a task boundary
        started = time.perf_counter()
        scenarios = self.samplers[task_id].sample(config.scenarios_per_iteration)
        specs = [EpisodeSpec(task, s, group_id=g, seed=episode_seed(config.seed, iteration, g, k))
                 for g, s in enumerate(scenarios) for k in range(config.num_generations)]
        mine = [i for i, spec in enumerate(specs) if self.parallel.owns_group(spec.group_id)]  # whole groups
        self.policy.eval()
        failure, local = None, []
        try:
            local, _ = run_episodes(self.agent, [specs[i] for i in mine], max_turns=config.max_turns,
                                    concurrency=config.rollout_concurrency, user_factory=self.llm.user_factory)
            sampler_version = self.rollout_engine.version if self.rollout_engine else self.policy_version
            for trajectory in local:  # the optimizer steps the sampling weights had taken
                for turn in trajectory.turns:
                    turn.policy_version = sampler_version
            rollout_seconds = time.perf_counter() - started
            local_results = self._score(task, local)
        except Exception as error:  # noqa: BLE001 - re-raised below, on every rank, after the others hear of it
            failure, local_results, rollout_seconds = error, [], time.perf_counter() - started
        reward_seconds = time.perf_counter() - started - rollout_seconds
        trajectories, results = self._gather_episodes(mine, local, local_results, len(specs), failure)
        completion_tokens = sum(t.num_completion_tokens for t in trajectories)
        # sampled by older weights than the policy about to be updated: off-policy, and counted
        stale = sum(any(turn.policy_version != self.policy_version for turn in t.turns) for t in trajectories)
        update_started = time.perf_counter()
        kept = [(t, r) for t, r in zip(trajectories, results) if r is not None]
        kept, advantages, advantage_stats = self._advantages(kept, task)
        replayed = self.continual.replay(len(kept), task.name)  # earlier tasks' episodes, off-policy
        update_stats, mismatch = self._update([t for t, _ in kept], advantages, replayed)
        self.continual.record([t for t, _ in kept], advantages, task.name)
        update_seconds = time.perf_counter() - update_started
        sync_seconds = self._sync_rollout_weights()
        metrics = self._iteration_metrics(iteration, task.name, trajectories, results, advantage_stats, update_stats)
        metrics.update(self.continual.metrics(len(kept), len(replayed)))
        metrics.update(self.llm.metrics(trajectories))
        user_failures = sum(t.end_reason == USER_ERROR for t in trajectories)  # dropped, not a reward failure
        metrics.update(mismatch)
        if self.rollout_engine is not None:
            metrics["time/weight_sync"] = sync_seconds
            metrics["rollout/stale_episodes"] = stale
        metrics.update({
            "tokens/completion": completion_tokens,
            "tokens/per_second": completion_tokens / max(rollout_seconds, 1e-9),
            "rewards/skipped": len(trajectories) - len(kept) - user_failures,
            "time/rollout": rollout_seconds, "time/reward": reward_seconds, "time/update": update_seconds,
            "time/iteration": time.perf_counter() - started,
        })
        return metrics

    def _gather_episodes(self, mine: list[int], local: list, local_results: list, total: int, failure):
        """Every rank's episodes and reward results, in spec order, on every rank. A rank that failed
        (a reward error, a dead server) makes every rank raise, instead of leaving them waiting."""
        if not self.parallel.enabled:
            if failure is not None:
                raise failure
            return local, local_results
        failures = self.parallel.gather([(self.parallel.rank, repr(failure))] if failure is not None else [])
        if failures:
            if failure is not None:
                raise failure
            rank, message = failures[0]
            raise RuntimeError(f"rank {rank} failed during rollouts or rewards: {message}")
        pairs = gather_in_order(self.parallel, list(zip(mine, zip(local, local_results))), total)
        return [t for t, _ in pairs], [r for _, r in pairs]

    def _score(self, task, trajectories):
        from stateset_agents.rewards.batch_rewards import score_trajectories_sync

        # an episode whose LLM customer failed is dropped unscored (counted in user/llm_failures)
        scorable = [t for t in trajectories if t.end_reason != USER_ERROR]
        scored = iter(score_trajectories_sync(self.reward_for(task), scorable,
                                              error_policy=self.config.reward_error_policy))
        results = [None if t.end_reason == USER_ERROR else next(scored) for t in trajectories]
        for trajectory, result in zip(trajectories, results):
            if result is not None:
                trajectory.reward, trajectory.reward_components = result.total, dict(result.components)
        return results

    def _advantages(self, kept, task) -> tuple[list, list[float], dict[str, float]]:
        """Group advantages of the scored episodes: (episodes kept, their advantages, stats).

        A group whose advantages are not finite (rewards too large for the computation, or for
        the loss's float32) would train on garbage: it fails the run with a RewardError naming
        the reward and the scenario, or under reward_error_policy="skip" its episodes are dropped
        (counted in rewards/skipped).
        """
        from stateset_agents.rewards.base import RewardError, reward_name
        from stateset_agents.training.advantages import group_advantages_by_id

        if not kept:
            return kept, [], {"groups": 0, "zero_variance_groups": 0}
        # float64: a float32 tensor would already turn rewards beyond ~3e38 into inf
        rewards = torch.tensor([r.total for _, r in kept], dtype=torch.float64)
        groups = [t.group_id for t, _ in kept]
        result = group_advantages_by_id(rewards, torch.tensor(groups), self.config.advantage_normalization)
        advantages = result.advantages.float().tolist()  # the loss's dtype
        bad = sorted({g for g, a in zip(groups, advantages) if not math.isfinite(a)})
        for group in bad:
            members = [i for i, g in enumerate(groups) if g == group]
            cause = ValueError(
                f"the rewards {[kept[i][1].total for i in members]} of group {group} (episodes {members} of this "
                f"iteration) give non-finite advantages: keep rewards in a moderate range (e.g. [0, 1]), or set "
                f"reward_error_policy='skip' to drop such groups")
            error = RewardError(reward_name(self.reward_for(task)), str(kept[members[0]][0].scenario.get("id", "?")), cause)
            if self.config.reward_error_policy == "fail":
                raise error
            self.log(f"skipped: {error}")
        if bad:
            keep = [i for i, g in enumerate(groups) if g not in bad]
            kept, advantages, groups = [kept[i] for i in keep], [advantages[i] for i in keep], [groups[i] for i in keep]
        stats = {"groups": len(set(groups)), "zero_variance_groups": result.num_zero_variance_groups}
        return kept, advantages, stats

    def _update(self, trajectories, advantages: list[float], replayed=()) -> tuple[list[dict[str, float]], dict]:
        """Several optimizer steps over the rollout batch (+ replayed episodes); returns each step's
        statistics and the sampler/trainer mismatch (empty unless π_old is recomputed)."""
        config = self.config
        rows = rows_from_trajectories(trajectories, advantages) + rows_from_replay(replayed, len(trajectories))
        if not rows:
            return [], {}
        by_episode: dict[int, list] = {}
        for row in rows:
            by_episode.setdefault(row.episode, []).append(row)
        minibatches = split_episodes(sorted(by_episode), self.steps_per_iteration, self.update_generator)
        # this rank's episodes of each minibatch (all of them in one process); an empty share joins the
        # gradient reduction with the minibatch's first episode at weight 0
        shares = [self.parallel.share(minibatch) or minibatch[:1] for minibatch in minibatches]
        my_rows = [row for share in shares for episode in share for row in by_episode[episode]]
        pad_token_id = self.agent.tokenizer.pad_token_id
        mismatch = self._recompute_old_logprobs(my_rows) if self.recompute_old_logprobs else {}
        if self.reference is not None:
            fill_reference_logprobs(self.policy, my_rows, attribute="ref_logprobs", context=self.reference,
                                    pad_token_id=pad_token_id)
        if self.continual.lwf_active:  # LwF: every row, or (lwf_rows="replayed") earlier tasks' episodes only
            taught = my_rows if config.lwf_rows == "all" else [row for row in my_rows if row.replayed]
            fill_reference_logprobs(self.policy, taught, attribute="teacher_logprobs",
                                    context=self.continual.teacher.active, pad_token_id=pad_token_id)
        self.policy.train()
        device = next(self.policy.parameters()).device
        step_stats = []
        for minibatch, share in zip(minibatches, shares):
            micro = [make_micro_batch([r for e in chunk for r in by_episode[e]], device)
                     for chunk in _chunks(share, config.per_device_train_batch_size)]
            if not self.parallel.share(minibatch):
                micro[0].num_episodes = 0
            stats = optimizer_step(
                self.train_model, self.optimizer, self.scheduler, micro, self._loss,
                pad_token_id=pad_token_id, max_grad_norm=config.max_grad_norm,
                total_episodes=len(minibatch), parallel=self.parallel,
            )
            step_stats.append({**stats.values, "skipped": float(stats.skipped_nonfinite),
                               "lr": self.scheduler.get_last_lr()[0],
                               "episodes": float(sum(mb.num_episodes for mb in micro))})
        self.policy.eval()
        return self._merge_step_stats(step_stats), mismatch

    def _recompute_old_logprobs(self, rows) -> dict[str, float]:
        """π_old := the trainer's forward on `rows` (before any step); the sampler's log-probs (log μ)
        move to `sampler_logprobs`, where only the truncated importance weight uses them. Returns the
        mismatch between the two over every rank's rows (mean |Δ| and k3 KL(μ || π_old) per token)."""
        from contextlib import nullcontext

        for row in rows:
            if row.sampler_logprobs is None:
                row.sampler_logprobs = list(row.old_logprobs)
        fill_reference_logprobs(self.policy, rows, attribute="old_logprobs", context=nullcontext,
                                pad_token_id=self.agent.tokenizer.pad_token_id)
        delta = torch.tensor([o - m for row in rows for o, m in zip(row.old_logprobs, row.sampler_logprobs)],
                             dtype=torch.float64)  # log(π_old / μ) per sampled token
        sums = [(float(delta.abs().sum()), float((delta.exp() - 1 - delta).sum()), delta.numel())]
        abs_sum, k3_sum, count = (sum(values) for values in zip(*self.parallel.gather(sums)))
        if not count:
            return {}
        return {"mismatch/logprob_abs_diff": abs_sum / count, "mismatch/k3_kl": k3_sum / count}

    def _merge_step_stats(self, step_stats: list[dict[str, float]]) -> list[dict[str, float]]:
        """Each step's statistics over all ranks (weighted by their episodes), not rank 0's share."""
        if not self.parallel.enabled:
            return step_stats
        per_rank = [stats for _, stats in sorted(self.parallel.gather([(self.parallel.rank, step_stats)]))]
        merged = []
        for steps in zip(*per_rank):
            weights = [s["episodes"] for s in steps]
            step = {"skipped": steps[0]["skipped"], "lr": steps[0]["lr"], "episodes": sum(weights)}
            for key in {k for s in steps for k in s} - set(step):
                pairs = [(s[key], w) for s, w in zip(steps, weights) if key in s and w > 0]
                if pairs:
                    step[key] = reduce_metric(key, [v for v, _ in pairs], [w for _, w in pairs])
            merged.append(step)
        return merged

    @property
    def policy_version(self) -> int:
        """Optimizer steps applied to the policy so far (the scheduler counts them; checkpoints keep it)."""
        return int(self.scheduler.last_epoch)

    def _loss(self, logprobs: torch.Tensor, mb: MicroBatch, mask: torch.Tensor, scored) -> tuple[torch.Tensor, dict]:
        """Every term of the objective comes from `losses.policy_loss`; this only names the inputs."""
        from stateset_agents.training.losses import policy_loss

        config = self.config
        loss, stats = policy_loss(
            logprobs, mb.old_logprobs, mb.advantages, mask,
            loss_type=config.loss_type, clip_epsilon_low=config.clip_epsilon_low,
            clip_epsilon_high=config.clip_epsilon_high, sequence_index_B=mb.sequence_index,
            ref_logprobs_B_T=mb.ref_logprobs, kl_beta=config.kl_beta,
            teacher_logprobs_B_T=mb.teacher_logprobs,  # LwF: KL to the previous task's frozen adapter
            teacher_kl_beta=config.kl_penalty_beta if mb.teacher_logprobs is not None else 0.0,
            teacher_rows_B=mb.teacher_rows, teacher_kl_direction=config.lwf_divergence,
            sampler_logprobs_B_T=mb.sampler_logprobs,  # None: the sampler is this policy, no correction
            importance_weight_cap=config.importance_weight_cap,
        )
        named = {METRIC_NAMES[k]: v for k, v in stats.items() if k in METRIC_NAMES}
        if self.continual.lwf_active and mb.teacher_logprobs is None:
            # lwf_rows="replayed" and no replayed episode here: the KL term is 0 on these rows, as in a mixed
            # micro-batch, so the logged KL stays the mean over every episode of the step
            named.update({METRIC_NAMES["kl_teacher"]: 0.0, METRIC_NAMES["loss_kl_teacher"]: 0.0})
        return loss, named

    def _iteration_metrics(self, iteration, task_name, trajectories, results, advantage_stats, steps) -> dict:
        summary = summarize(trajectories, results)
        metrics: dict[str, Any] = {
            "iteration": iteration + 1, "task": task_name,  # 1-based: iterations completed
            "reward/mean": summary["reward_mean"], "reward/std": summary["reward_std"],
            "success_rate": summary["success_rate"], "episode/turns_mean": summary["turns_mean"],
            "episode/completion_tokens_mean": float(np.mean([t.num_completion_tokens for t in trajectories])),
            "episode/cut_off_turns": summary["cut_off_turns"],
            "groups/zero_variance": advantage_stats.get("zero_variance_groups", 0),
            "groups/total": advantage_stats.get("groups", 0),
            "optimizer_steps": sum(1 for s in steps if not s["skipped"]),
            "skipped_steps/nonfinite": sum(1 for s in steps if s["skipped"]),
        }
        for key, value in summary.items():
            if key.startswith("component/"):
                metrics[f"reward/{key.split('/', 1)[1]}"] = value
        for trajectory in trajectories:
            key = f"episode/end_reasons/{trajectory.end_reason or 'unknown'}"
            metrics[key] = metrics.get(key, 0) + 1
        if steps:
            metrics["ratio/first_step_mean"] = steps[0].get("ratio/mean", float("nan"))
            for key in {k for s in steps for k in s} - {"skipped", "episodes"}:
                values = [s[key] for s in steps if key in s and math.isfinite(s[key])]
                if values:  # min of minima, max of maxima, sums of counts, means of the rest
                    metrics[key] = reduce_metric(key, values)
        return metrics

    # -- the loop ------------------------------------------------------------------------
    def train(self) -> TrainingResult:
        """Run the remaining iterations; a managed vLLM server is stopped however the run ends."""
        try:
            return self._train()
        finally:
            self.close()

    def close(self) -> None:
        """Stop what the trainer started outside this process (a managed vLLM server)."""
        if self.rollout_engine is not None:
            self.rollout_engine.close()

    def _train(self) -> TrainingResult:
        from stateset_agents.runs.metrics import MetricsLogger, truncate_metrics
        from stateset_agents.runs.report import write_report

        config = self.config
        main = self.parallel.is_main
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            config.save(self.output_dir)
        resumed_from = self._resume() if config.resume else None
        if resumed_from is not None:
            self._sync_rollout_weights()  # the engine started with the weights before the checkpoint loaded
        # A crash after logging an iteration but before its checkpoint left lines this run logs
        # again: keep each iteration once (no checkpoint: the earlier partial run's lines all go).
        dropped = truncate_metrics(self.output_dir, self.iteration_index) if main else 0
        logger = MetricsLogger(self.output_dir, report_to=config.report_to, wandb_project=config.wandb_project,
                               wandb_run_name=config.wandb_run_name, config=config.model_dump(mode="json"),
                               total_iterations=config.num_outer_iterations, start_iteration=self.iteration_index,
                               console_every=config.log_every) if main else SilentLogger()
        with logger:
            if config.resume or dropped:
                start = (f"resumed from {resumed_from} at iteration {self.iteration_index}" if resumed_from
                         else "started from scratch (no checkpoint to resume from)")
                logger.log_event(start + (f"; dropped {dropped} metrics.jsonl lines logged after iteration "
                                          f"{self.iteration_index}" if dropped else ""))
            for iteration in range(self.iteration_index, config.num_outer_iterations):
                if iteration > 0 and self.task_index(iteration) != self.task_index(iteration - 1):
                    logger.log_event(f"task boundary: {self.tasks[self.task_index(iteration - 1)].name} -> "
                                     f"{self.tasks[self.task_index(iteration)].name}")
                metrics = self.iteration(iteration)
                if config.eval_every and (iteration + 1) % config.eval_every == 0:
                    metrics.update(self._eval_metrics(self.tasks[self.task_index(iteration)]))
                self.history.append(metrics)
                logger.log(metrics)
                self.iteration_index = iteration + 1
                if config.save_every and (self.iteration_index % config.save_every == 0
                                          or self.iteration_index == config.num_outer_iterations):
                    self.save_checkpoint()
        if main:
            write_report(self.output_dir, title=f"GSPO fine-tuning of {config.model_name}")
        self.parallel.barrier()  # no rank returns (and e.g. reads the report) before rank 0 has written
        return TrainingResult(self.output_dir, self.history)

    def _eval_metrics(self, task) -> dict[str, float]:
        scenarios = task.eval_scenarios()[: self.config.eval_scenarios]
        summary = evaluate(self.agent, task, scenarios, self.reward_for(task), max_turns=self.config.max_turns,
                           concurrency=self.config.rollout_concurrency, seed=self.config.seed + 10_000,
                           parallel=self.parallel, user_factory=self.llm.user_factory)
        metrics = {"eval/reward_mean": summary["reward_mean"], "eval/reward_std": summary["reward_std"],
                   "eval/success_rate": summary["success_rate"]}
        if self.llm.user_factory is not None:
            metrics["eval/user_failures"] = summary["user_failures"]
        return metrics

    # -- checkpoints -----------------------------------------------------------------------
    def trainer_state(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration_index,
            "samplers": [s.state_dict() for s in self.samplers],
            "update_generator": self.update_generator.get_state().tolist(),
            "history": self.history,
            "continual": self.continual.state(),
        }

    def save_checkpoint(self) -> Path | None:
        from stateset_agents.runs.checkpoints import save_checkpoint

        path = None
        if self.parallel.is_main:  # every rank holds the same state: rank 0 writes it, the others wait
            path = save_checkpoint(self.output_dir, self.iteration_index, self.policy, self.optimizer,
                                   self.scheduler, self.trainer_state(), extra_files=self.continual.extra_files())
            self.log(f"checkpoint: {path}")
        self.parallel.barrier()
        return path

    def _resume(self) -> Path | None:
        """Load the latest checkpoint (weights, optimizer, RNG, samplers, history); returns its path or None."""
        from stateset_agents.runs.checkpoints import latest_checkpoint, load_checkpoint

        path = latest_checkpoint(self.output_dir)
        if path is None:
            self.log(f"resume: no checkpoint in {self.output_dir}; starting from scratch")
            return None
        self.continual.before_load(path)  # the teacher adapter must exist before its weights load
        state = load_checkpoint(path, self.policy, self.optimizer, self.scheduler)
        self.continual.load_state(state.get("continual"))
        self.continual.after_load(path)
        self.iteration_index = int(state["iteration"])
        for sampler, sampler_state in zip(self.samplers, state["samplers"]):
            sampler.load_state_dict(sampler_state)
        self.update_generator.set_state(torch.tensor(state["update_generator"], dtype=torch.uint8))
        self.history = list(state.get("history", []))
        self.log(f"resumed from {path} at iteration {self.iteration_index}")
        return path


def _with_system_prompt(task, system_prompt: str | None):
    """`task` with `system_prompt` (when set) replacing its own in training and evaluation episodes. A
    duck-typed task (not a `Task` subclass) runs unchanged without one and is refused with one."""
    if system_prompt is None:
        return task
    if not hasattr(task, "with_system_prompt"):
        raise ValueError(f"system_prompt is set, but task {task.name!r} ({type(task).__name__}) has no "
                         f"with_system_prompt(): subclass stateset_agents.tasks.base.Task, or leave system_prompt unset")
    return task.with_system_prompt(system_prompt)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), max(1, size))]
