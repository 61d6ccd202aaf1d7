"""Data-parallel training (training/distributed.py) is proved equal to one process, not assumed.

Two CPU processes (gloo, launched by `accelerate launch --multi_gpu --num_processes 2`: accelerate's
torchrun launcher; the trainer puts each rank on the CPU) train the tiny model for 2 iterations and
are compared with one process on the same config (same global batch: 4 groups x 2 episodes, 4
optimizer steps per iteration):
- the same episodes: every iteration's mean reward and sampled-token count are equal (each episode
  samples with its own seed, whichever rank runs it);
- the same adapter, within float tolerance: the gradient sums run in another order (two ranks'
  partial sums, reduced by DDP), which moves the weights by ~1e-7 of a step; Adam turns a gradient
  near 0 into a step of any sign, so a few elements may differ by up to one learning rate. Stated:
  99.9% of adapter elements within 1e-5 and every element within 2 x lr x optimizer steps (measured at
  lr 1e-3: see the assertion messages).
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "workers" / "train_length_reward.py"
LR = 1e-3
ITERATIONS = 2
STEPS_PER_ITERATION = 4


def write_config(path: Path, **overrides) -> Path:
    values = dict(
        model_name="tiny-kimi-k2.5-base", task="customer_service", output_dir=str(path),
        use_lora=True, lora_r=4, lora_alpha=8, num_generations=2, scenarios_per_iteration=4,
        per_device_train_batch_size=1, gradient_accumulation_steps=1, num_outer_iterations=ITERATIONS,
        learning_rate=LR, max_new_tokens=8, max_turns=2, rollout_concurrency=4, eval_every=0,
        save_every=1, report_to=["jsonl"], device="cpu", seed=3,
    )
    values.update(overrides)
    config = path.with_suffix(".json")
    config.write_text(json.dumps(values))
    return config


def launch_command(processes: int, config: Path) -> list[str]:
    if processes == 1:
        return [sys.executable, str(WORKER), str(config)]
    accelerate = Path(sys.executable).with_name("accelerate")
    return [str(accelerate), "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", str(WORKER), str(config)]


def run(processes: int, config: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(launch_command(processes, config), cwd=REPO, capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def adapter(run_dir: Path, iteration: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = glob.glob(str(run_dir / "checkpoints" / f"iter_{iteration:06d}" / "**" / "adapter_model.safetensors"),
                      recursive=True)
    assert len(files) == 1, files
    return load_file(files[0])


def metrics(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if "event" not in line]


@pytest.fixture(scope="module")
def single_process_run(tiny_model_dir, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("one") / "run"
    run(1, write_config(run_dir))
    return run_dir


@pytest.fixture(scope="module")
def two_process_run(tiny_model_dir, tmp_path_factory) -> tuple[Path, str]:
    """One uninterrupted two-process run (its directory and stdout), shared by the tests that compare with it."""
    run_dir = tmp_path_factory.mktemp("two") / "run"
    return run_dir, run(2, write_config(run_dir)).stdout


def test_two_processes_train_the_same_adapter_as_one(single_process_run, two_process_run):
    run_dir, stdout = two_process_run
    assert stdout.count("checkpoint: ") == ITERATIONS, "only rank 0 writes (and says so)"
    one, two = metrics(single_process_run), metrics(run_dir)
    assert [m["iteration"] for m in two] == [1, 2], "rank 0 logs each iteration once"
    for a, b in zip(one, two):  # the same episodes, whole batch in the metrics (not rank 0's half)
        assert (a["reward/mean"], a["tokens/completion"], a["episodes/trained"]) == \
               (b["reward/mean"], b["tokens/completion"], b["episodes/trained"])
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
    reference, trained = adapter(single_process_run, ITERATIONS), adapter(run_dir, ITERATIONS)
    assert reference.keys() == trained.keys()
    initial = adapter(single_process_run, 1)
    assert any(not torch.equal(initial[k], reference[k]) for k in reference), "the adapter must move"
    diff = torch.cat([(reference[k] - trained[k]).abs().flatten() for k in reference])
    close = float((diff <= 1e-5).float().mean())
    assert close >= 0.999, f"only {close:.4%} of adapter elements within 1e-5 (max |diff| {float(diff.max()):.2e})"
    bound = 2 * LR * ITERATIONS * STEPS_PER_ITERATION
    assert float(diff.max()) <= bound, f"max |diff| {float(diff.max()):.2e} > {bound:.1e}"


def test_two_processes_killed_then_resumed_end_with_the_uninterrupted_adapter(two_process_run, tmp_path):
    uninterrupted, interrupted = two_process_run[0], tmp_path / "killed"
    config = write_config(interrupted)
    process = subprocess.Popen(launch_command(2, config), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)},
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not (interrupted / "checkpoints" / "iter_000001" / "COMPLETE").exists():
            assert process.poll() is None and time.monotonic() < deadline, "no first checkpoint"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and both ranks
        process.wait()
    assert not (interrupted / "checkpoints" / "iter_000002" / "COMPLETE").exists(), "killed too late to test resume"
    run(2, write_config(interrupted, resume=True))
    expected, resumed = adapter(uninterrupted, ITERATIONS), adapter(interrupted, ITERATIONS)
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    assert [m["iteration"] for m in metrics(interrupted)] == [1, 2]


ACCELERATE_CONFIGS = REPO / "configs" / "accelerate"


@pytest.mark.parametrize("name,engine", [("fsdp2_8gpu.yaml", "FSDP"), ("zero3_8gpu.yaml", "DEEPSPEED"),
                                         ("multi_process_cpu.yaml", "MULTI_GPU")])
def test_shipped_accelerate_configs_parse_as_accelerate_reads_them(name, engine):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ACCELERATE_CONFIGS / name))
    assert config.distributed_type.value == engine
    if engine == "FSDP":
        fsdp = config.fsdp_config
        assert (fsdp["fsdp_version"], config.mixed_precision, fsdp["fsdp_activation_checkpointing"]) == (2, "bf16", True)
        import transformers.models.deepseek_v3.modeling_deepseek_v3 as deepseek  # the class it wraps must exist

        assert hasattr(deepseek, fsdp["fsdp_transformer_layer_cls_to_wrap"])
    if engine == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 3 and config.mixed_precision == "bf16"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("variable,engine", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_a_sharded_engine_on_a_machine_without_gpus_is_refused_not_replaced(monkeypatch, variable, engine):
    """accelerate itself would fall back to plain DDP on CPU; the trainer says so and stops instead."""
    from stateset_agents.training.distributed import DataParallel

    monkeypatch.setenv(variable, "true")
    with pytest.raises(RuntimeError, match=f"asks for {engine}.*no CUDA device.*multi_process_cpu.yaml"):
        DataParallel("cpu")
