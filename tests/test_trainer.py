"""The GSPO trainer end to end on the tiny Kimi-K2.5 (random init): ratio, resume, metrics, safety."""

from __future__ import annotations

import json
import math

import pytest
import torch

from stateset_agents.rewards.multi_objective_reward import MultiObjectiveReward
from stateset_agents.training.config import TrainingConfig
from stateset_agents.training.trainer import GSPOTrainer


class LengthReward(MultiObjectiveReward):
    """Rewards even token ids in the first turn: varies within groups, so advantages are not all zero."""

    async def compute_reward(self, trajectory):
        ids = trajectory.turns[0].completion_ids
        return sum(token % 2 == 0 for token in ids) / max(len(ids), 1)


def tiny_config(tmp_path, **overrides) -> TrainingConfig:
    values = dict(
        model_name="tiny-kimi-k2.5-base", task="customer_service", output_dir=str(tmp_path / "run"),
        use_lora=True, lora_r=4, lora_alpha=8, num_generations=2, scenarios_per_iteration=2,
        per_device_train_batch_size=1, gradient_accumulation_steps=1, num_outer_iterations=2,
        learning_rate=1e-2, max_new_tokens=8, max_turns=2, rollout_concurrency=4, eval_every=0,
        save_every=1, report_to=["jsonl"], device="cpu", seed=3,
    )
    values.update(overrides)
    return TrainingConfig(**values)


def adapter_state(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.policy.named_parameters() if v.requires_grad}


def test_ratio_is_one_on_the_first_minibatch_and_moves_after(tmp_path):
    trainer = GSPOTrainer(tiny_config(tmp_path, num_outer_iterations=1), reward_fn=LengthReward())
    assert trainer.steps_per_iteration == 4
    metrics = trainer.iteration(0)
    assert metrics["optimizer_steps"] == 4
    assert metrics["ratio/first_step_mean"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["ratio/max"] - 1.0 > 1e-4 or 1.0 - metrics["ratio/min"] > 1e-4


def test_training_writes_metrics_config_checkpoint_and_report(tmp_path):
    config = tiny_config(tmp_path)
    result = GSPOTrainer(config, reward_fn=LengthReward()).train()
    lines = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    records = [line for line in lines if "event" not in line]
    assert [r["iteration"] for r in records] == [1, 2]
    for key in ("reward/mean", "clip/low_fraction", "clip/high_fraction", "ratio/mean", "grad_norm", "lr",
                "time/rollout", "time/reward", "time/update", "entropy", "tokens/completion"):
        assert key in records[-1] and math.isfinite(records[-1][key]), key
    assert TrainingConfig.from_file(result.output_dir / "config.yaml") == config
    assert (result.output_dir / "report.md").exists() and list((result.output_dir / "plots").glob("*.png"))
    assert (result.output_dir / "lora_targets.json").exists()
    assert (result.output_dir / "checkpoints" / "iter_000002" / "adapter").is_dir()


class Interrupted(Exception):
    pass


def test_killed_and_resumed_run_ends_with_the_same_adapter(tmp_path):
    uninterrupted = GSPOTrainer(tiny_config(tmp_path / "a", num_outer_iterations=3), reward_fn=LengthReward())
    uninterrupted.train()

    class KilledAfterTwo(GSPOTrainer):
        def iteration(self, iteration):
            if iteration == 2:
                raise Interrupted
            return super().iteration(iteration)

    with pytest.raises(Interrupted):
        KilledAfterTwo(tiny_config(tmp_path / "b", num_outer_iterations=3), reward_fn=LengthReward()).train()
    resumed = GSPOTrainer(tiny_config(tmp_path / "b", num_outer_iterations=3, resume=True), reward_fn=LengthReward())
    resumed.train()
    expected, actual = adapter_state(uninterrupted), adapter_state(resumed)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert resumed.history[-1]["iteration"] == 3


def test_non_finite_loss_skips_the_step_and_keeps_the_weights(tmp_path, monkeypatch):
    trainer = GSPOTrainer(tiny_config(tmp_path, num_outer_iterations=1), reward_fn=LengthReward())
    before = adapter_state(trainer)
    original = trainer._loss

    def nan_loss(*args):
        loss, stats = original(*args)
        return loss * float("nan"), stats

    monkeypatch.setattr(trainer, "_loss", nan_loss)
    metrics = trainer.iteration(0)
    assert metrics["skipped_steps/nonfinite"] == 4 and metrics["optimizer_steps"] == 0
    after = adapter_state(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_reference_kl_uses_the_adapter_disabled_model(tmp_path):
    trainer = GSPOTrainer(tiny_config(tmp_path, num_outer_iterations=1, kl_beta=0.1), reward_fn=LengthReward())
    metrics = trainer.iteration(0)
    assert metrics["kl/ref"] >= 0.0 and math.isfinite(metrics["kl/ref"])
    # one model object: the reference is the same weights with the adapter switched off
    assert sum(1 for m in trainer.policy.modules() if type(m).__name__.startswith("Kimi_K25ForConditional")) == 1


def test_use_vllm_with_an_unreachable_server_fails_at_start_naming_the_url(tmp_path):
    from stateset_agents.rollout.vllm_client import VLLMUnreachableError
    from stateset_agents.rollout.vllm_server import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(VLLMUnreachableError, match=url.replace(".", r"\.")):
        GSPOTrainer(tiny_config(tmp_path, use_vllm=True, vllm_base_url=url))


def test_recomputed_old_logprobs_log_the_mismatch_and_start_the_ratio_at_one(tmp_path):
    """recompute_old_logprobs with the HF sampler: π_old from a separate forward equals the sampler's
    log-probs (invariant 1), so the mismatch is ~0 and every importance weight is ~1."""
    trainer = GSPOTrainer(tiny_config(tmp_path, num_outer_iterations=1, recompute_old_logprobs=True),
                          reward_fn=LengthReward())
    metrics = trainer.iteration(0)
    assert metrics["mismatch/logprob_abs_diff"] < 1e-4 and 0 <= metrics["mismatch/k3_kl"] < 1e-6
    assert metrics["tis/weight_min"] == pytest.approx(1.0, abs=1e-3)
    assert metrics["tis/weight_max"] == pytest.approx(1.0, abs=1e-3)
    assert metrics["ratio/first_step_mean"] == pytest.approx(1.0, abs=1e-5)


# 4 small iterations, checkpointed after 2 and 4: iteration 3 is logged but saved nowhere while 4 runs
_KILL_RUN = dict(num_outer_iterations=4, save_every=2, scenarios_per_iteration=1, max_turns=1)
_CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_trainer import LengthReward, tiny_config
from stateset_agents.training.trainer import GSPOTrainer
GSPOTrainer(tiny_config(Path(sys.argv[1]), **json.loads(sys.argv[2])), reward_fn=LengthReward()).train()
"""


def _untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "tokens/per_second"} for r in records]


def _report_counts(run_dir) -> list[str]:
    """report.md's headline and summary rows, less the wall-clock ones and the events."""
    text = (run_dir / "report.md").read_text().split("## Events")[0].split("## Plots")[0]
    return [line for line in text.splitlines()[3:] if "time" not in line]


def test_kill_9_between_logging_and_checkpoint_then_resume_logs_each_iteration_once(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from stateset_agents.runs.checkpoints import latest_checkpoint
    from stateset_agents.runs.metrics import read_metrics, split_events

    run = tmp_path / "killed" / "run"

    def logged() -> list[int]:
        if not (run / "metrics.jsonl").exists():
            return []
        return [r["iteration"] for r in split_events(read_metrics(run))[0]]

    with (tmp_path / "child.log").open("w") as child_log:
        child = subprocess.Popen([sys.executable, "-c", _CHILD.format(tests=str(Path(__file__).parent)),
                                  str(tmp_path / "killed"), json.dumps(_KILL_RUN)],
                                 stdout=child_log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while 3 not in logged():  # kill -9 as soon as iteration 3 (not checkpointed) is logged
                assert child.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "child never logged iteration 3"
                time.sleep(0.01)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
    # the kill came while iteration 4 ran: 3 is logged, its state is in no checkpoint
    assert logged() == [1, 2, 3] and latest_checkpoint(run).name == "iter_000002"

    resumed = GSPOTrainer(tiny_config(tmp_path / "killed", resume=True, **_KILL_RUN), reward_fn=LengthReward())
    resumed.train()
    uninterrupted = GSPOTrainer(tiny_config(tmp_path / "whole", **_KILL_RUN), reward_fn=LengthReward())
    uninterrupted.train()

    records, events = split_events(read_metrics(run))
    expected, _ = split_events(read_metrics(tmp_path / "whole" / "run"))
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    assert _untimed(records) == _untimed(expected)
    assert [(e["iteration"], e["event"]) for e in events] == [
        (2, f"resumed from {run / 'checkpoints' / 'iter_000002'} at iteration 2; "
            "dropped 1 metrics.jsonl lines logged after iteration 2")]
    assert _report_counts(run) == _report_counts(tmp_path / "whole" / "run")
    assert "4 iterations (1–4)" in (run / "report.md").read_text()
    expected_adapter, actual_adapter = adapter_state(uninterrupted), adapter_state(resumed)
    assert all(torch.equal(expected_adapter[k], actual_adapter[k]) for k in expected_adapter)


class ScriptedReward:
    """Returns `values` in turn (episodes are scored in order: groups of 2 get consecutive values)."""

    def __init__(self, *values: float):
        self.values, self.calls = values, 0

    def __call__(self, trajectory) -> float:
        self.calls += 1
        return self.values[(self.calls - 1) % len(self.values)]


def test_rewards_of_1e30_still_give_advantages(tmp_path):
    # float32 squares of 1e30 overflowed: every advantage was 0, so no gradient (grad_norm 0), silently
    trainer = GSPOTrainer(tiny_config(tmp_path, num_outer_iterations=1), reward_fn=ScriptedReward(1e30, -1e30))
    metrics = trainer.iteration(0)
    assert metrics["groups/zero_variance"] == 0 and metrics["rewards/skipped"] == 0
    assert metrics["grad_norm"] > 0 and metrics["optimizer_steps"] == 4


@pytest.mark.parametrize("bad", [1e200, float("nan")])
def test_reward_too_large_or_nan_fails_naming_the_reward_and_scenario(tmp_path, bad):
    from stateset_agents.rewards.base import RewardError

    trainer = GSPOTrainer(tiny_config(tmp_path, num_outer_iterations=1), reward_fn=ScriptedReward(bad, -bad))
    with pytest.raises(RewardError, match=r"reward 'ScriptedReward' failed on scenario '[^?']+'.*(non-finite|finite)"):
        trainer.iteration(0)


def test_reward_overflow_with_skip_policy_drops_that_group_and_counts_it(tmp_path):
    config = tiny_config(tmp_path, num_outer_iterations=1, reward_error_policy="skip")
    trainer = GSPOTrainer(config, reward_fn=ScriptedReward(1e200, -1e200, 0.0, 1.0))  # group 0 overflows
    metrics = trainer.iteration(0)
    assert metrics["rewards/skipped"] == 2 and metrics["groups/total"] == 1
    assert metrics["optimizer_steps"] > 0 and math.isfinite(metrics["grad_norm"]) and metrics["grad_norm"] > 0


class PromptRecorder:
    """A reward of 0.5 that keeps every trajectory it scores (what the rollout really produced)."""

    def __init__(self):
        self.trajectories = []

    def __call__(self, trajectory) -> float:
        self.trajectories.append(trajectory)
        return 0.5


def test_system_prompt_setting_reaches_the_rollout_prompt(tmp_path):
    override = "You are Zed, the terse returns bot of Acme."
    recorder = PromptRecorder()
    config = tiny_config(tmp_path, num_outer_iterations=1, scenarios_per_iteration=1, max_turns=1,
                         system_prompt=override, temperature=0.7)
    trainer = GSPOTrainer(config, reward_fn=recorder)
    trainer.iteration(0)
    own = trainer.tasks[0].__class__.system_prompt
    assert recorder.trajectories
    for trajectory in recorder.trajectories:
        assert trajectory.messages[0] == {"role": "system", "content": override}
        prompt = trainer.agent.tokenizer.decode(trajectory.turns[0].prompt_ids)
        assert override in prompt and own not in prompt
        # how each turn was sampled travels with it: temperature 0.7, sampled before any optimizer step
        assert {(t.temperature, t.policy_version) for t in trajectory.turns} == {(0.7, 0)}
    assert trainer.policy_version == trainer.steps_per_iteration  # later rollouts carry the new version


class StepRecording(GSPOTrainer):
    """Keeps each micro-batch's loss statistics and each optimizer step's reduced ones."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.micro, self.steps = [], []

    def _loss(self, *args):
        loss, stats = super()._loss(*args)
        self.micro.append(dict(stats))
        return loss, stats

    def _update(self, *args):
        self.steps, mismatch = super()._update(*args)
        return self.steps, mismatch


def test_micro_batch_and_step_statistics_reduce_to_extremes_and_counts(tmp_path):
    # 4 episodes, 2 optimizer steps of 2 micro-batches (one episode each)
    trainer = StepRecording(tiny_config(tmp_path, num_outer_iterations=1, gradient_accumulation_steps=2),
                            reward_fn=LengthReward())
    metrics = trainer.iteration(0)
    assert len(trainer.steps) == 2 and len(trainer.micro) == 4
    for step, micro in zip(trainer.steps, (trainer.micro[:2], trainer.micro[2:])):
        assert step["ratio/min"] == min(m["ratio/min"] for m in micro)
        assert step["ratio/max"] == max(m["ratio/max"] for m in micro)
        assert step["tokens/trained"] == sum(m["tokens/trained"] for m in micro)
        assert step["loss/total"] == pytest.approx(sum(m["loss/total"] for m in micro) / 2)
    assert trainer.micro[2]["ratio/min"] != trainer.micro[3]["ratio/min"]  # the second step's two episodes differ
    assert metrics["ratio/min"] == min(s["ratio/min"] for s in trainer.steps)
    assert metrics["tokens/trained"] == metrics["tokens/completion"]  # every sampled token, once
    assert metrics["episodes/trained"] == 4
    assert metrics["loss/total"] == pytest.approx(metrics["loss/policy"])  # no KL terms here
    assert "kl/ref" not in metrics and "loss/kl_ref" not in metrics  # kl_beta = 0: nothing estimated
