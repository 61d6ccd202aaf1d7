"""GPU only: weight sync by runtime LoRA (`vllm_sync: lora`) on a vLLM server you run.

Skipped here: vLLM's CPU build fails every completion with a Triton error once runtime LoRA is on
for this MoE model, and no GPU is lent to our CI. On a CUDA machine with the vLLM environment it
trains one iteration against a server started with `--enable-lora` and checks that, after the
adapter of the new policy version is loaded, the server's greedy tokens equal HF's greedy tokens
of the updated policy (LoRA on the modules vLLM applies it to: no routed experts, no kv_b_proj).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="runtime LoRA on this MoE model needs a GPU (vLLM's CPU build fails with a Triton error)")]


def test_runtime_lora_sync_serves_the_updated_policy(vllm_python, tiny_model_dir, tmp_path, monkeypatch):
    from stateset_agents.models.export import export_for_vllm
    from stateset_agents.models.loading import LoadSettings, load_model
    from stateset_agents.rollout.vllm_server import VLLMServer, VLLMServerSettings
    from stateset_agents.training.config import TrainingConfig
    from stateset_agents.training.trainer import GSPOTrainer
    from tests.test_vllm_training import greedy_equal
    from tests.workers.train_length_reward import EvenTokenReward

    monkeypatch.setenv("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")
    loaded = load_model(str(tiny_model_dir), LoadSettings(device="cpu", dtype="float32"))
    export = export_for_vllm(loaded.model, loaded.tokenizer, tmp_path / "base")
    settings = VLLMServerSettings(max_model_len=2048, weight_reload=False,
                                  extra_args=["--enable-lora", "--max-lora-rank", "8", "--max-loras", "2"])
    with VLLMServer(export, tmp_path / "server.log", settings, python=vllm_python) as server:
        config = TrainingConfig(
            model_name=str(tiny_model_dir), task="customer_service", output_dir=str(tmp_path / "run"), use_lora=True,
            lora_r=8, lora_alpha=16, lora_target_experts=False,
            lora_target_modules=["q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "o_proj"],
            num_generations=2, scenarios_per_iteration=2, per_device_train_batch_size=1, num_outer_iterations=1,
            learning_rate=5e-3, max_new_tokens=16, max_turns=2, eval_every=0, save_every=0, report_to=["jsonl"],
            device="cpu", seed=5, use_vllm=True, vllm_base_url=server.base_url, vllm_sync="lora")
        trainer = GSPOTrainer(config, reward_fn=EvenTokenReward())
        try:
            metrics = trainer.iteration(0)
            assert metrics["time/weight_sync"] > 0 and trainer.rollout_engine.generator.model.startswith("policy-v")
            env = trainer.tasks[0].make_env(trainer.tasks[0].eval_scenarios()[0], max_turns=2)
            greedy_equal(trainer, [trainer.agent.encode(list(env.reset()), trainer.tasks[0].tools.schemas())])
        finally:
            trainer.close()
