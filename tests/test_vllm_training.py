"""Training through a real vLLM server (`use_vllm=True`, managed server on loopback).

The tiny model at Kimi's MLA widths (vLLM's CPU MLA runs only 512+64), LoRA, 2 iterations:
- the run samples through vLLM and trains: mismatch figures, importance weights and sync time are
  logged every iteration, no episode is stale, and π_old is the trainer's (first-step ratio 1);
- after each weight sync the server's greedy tokens equal HF's greedy tokens of the updated policy
  (the sync is exact, not approximate);
- a server killed mid-run gives a clear error naming it, not a hang.
One managed server per test (~40-60 s to start on 2 cores). Skipped when the vLLM environment is
missing (`make vllm-env`).
"""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir  # the default spec has vLLM's MLA widths (512 + 64)


def config(model_dir, tmp_path, **overrides):
    from stateset_agents.training.config import TrainingConfig

    values = dict(model_name=str(model_dir), task="customer_service", output_dir=str(tmp_path / "run"),
                  use_lora=True, lora_r=4, lora_alpha=8, num_generations=2, scenarios_per_iteration=2,
                  per_device_train_batch_size=1, num_outer_iterations=2, learning_rate=5e-3, max_new_tokens=16,
                  max_turns=2, rollout_concurrency=8, eval_every=0, save_every=1, report_to=["jsonl"],
                  device="cpu", seed=5, use_vllm=True, vllm_max_model_len=2048)
    values.update(overrides)
    return TrainingConfig(**values)


def greedy_equal(trainer, prompts, new_tokens=8) -> None:
    """The server's greedy ids equal HF's (full forward per step, LoRA active) for each prompt."""
    from stateset_agents.rollout.hf_generation import SamplingSettings

    settings = SamplingSettings(max_new_tokens=new_tokens, temperature=0.0)
    served = trainer.rollout_engine.generator.generate(prompts, settings)
    for prompt, sample in zip(prompts, served):
        ids = list(prompt.input_ids)
        with torch.no_grad():
            for _ in range(new_tokens):
                ids.append(int(trainer.policy(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
        expected = ids[len(prompt.input_ids):]
        cut = next((i + 1 for i, t in enumerate(expected) if t in trainer.agent.stop_token_ids), len(expected))
        assert sample.completion_ids == expected[:cut], "the server does not sample the updated policy"


def test_training_through_a_managed_vllm_server(vllm_python, model_dir, tmp_path, monkeypatch):
    from stateset_agents.training.trainer import GSPOTrainer
    from tests.workers.train_length_reward import EvenTokenReward

    monkeypatch.setenv("STATESET_VLLM_PYTHON", str(vllm_python))
    trainer = GSPOTrainer(config(model_dir, tmp_path), reward_fn=EvenTokenReward())
    try:
        scenario = trainer.tasks[0].eval_scenarios()[0]
        env = trainer.tasks[0].make_env(scenario, max_turns=2)
        prompts = [trainer.agent.encode(list(env.reset()), trainer.tasks[0].tools.schemas())]
        with torch.no_grad():  # make the adapter matter before comparing (PEFT starts B at zero)
            for name, parameter in trainer.policy.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.05)
        trainer._sync_rollout_weights()
        greedy_equal(trainer, prompts)
        history = []
        for iteration in range(2):
            metrics = trainer.iteration(iteration)
            history.append(metrics)
            greedy_equal(trainer, prompts)  # after this iteration's update and sync
        from stateset_agents.runs.metrics import METRIC_CONDITIONS

        vllm_only = {key for key, condition in METRIC_CONDITIONS.items() if condition == "use_vllm"}
        for metrics in history:
            assert vllm_only <= set(metrics), "the keys documented as logged with vLLM"
            assert metrics["rollout/stale_episodes"] == 0
            assert metrics["optimizer_steps"] > 0 and metrics["time/weight_sync"] > 0
            assert metrics["ratio/first_step_mean"] == pytest.approx(1.0, abs=1e-5)
            # measured: mean |Δ| ~1e-6 nats, k3 ~1e-10 on this model (different kernels, same math)
            assert 0 <= metrics["mismatch/logprob_abs_diff"] < 1e-3 and 0 <= metrics["mismatch/k3_kl"] < 1e-4
            assert 0 < metrics["tis/weight_min"] <= metrics["tis/weight_mean"] <= metrics["tis/weight_max"] <= 2.0
            assert math.isfinite(metrics["loss/policy"])
        log = tmp_path / "run" / "vllm" / "server.log"
        assert log.exists() and log.stat().st_size > 0
        server = trainer.rollout_engine.server
        os.killpg(server.process.pid, signal.SIGKILL)  # the server dies between iterations
        with pytest.raises(Exception, match="127.0.0.1") as failure:
            trainer.iteration(2)  # its rollouts (text prompts) or its weight sync meet the dead server
        print(f"after the kill: {type(failure.value).__name__}: {failure.value}")
    finally:
        trainer.close()
    assert trainer.rollout_engine.server is None
