"""The guide's commands and snippets, run as a user would (model swapped for the embedded tiny one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "examples" / "finetune_kimi25_gspo.py"


def run_script(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def test_guide_training_config_snippets_run_unchanged():
    from stateset_agents.training.kimi25_config import get_kimi25_config

    config = get_kimi25_config(
        model_name="moonshotai/Kimi-K2.5",
        task="customer_service",
        use_lora=True,
        output_dir="./outputs/kimi25_gspo"
    )
    assert (config.num_generations, config.learning_rate, config.lora_r) == (8, 3e-6, 64)
    assert (config.clip_epsilon_low, config.clip_epsilon_high) == (1.5e-4, 2.5e-4)
    # the guide's manual TrainingConfig snippet: tests/test_config.py::test_guide_snippets_are_accepted_unchanged


def test_real_kimi_without_weights_stops_with_a_clear_message(tmp_path):
    result = run_script("--model", "moonshotai/Kimi-K2.5", "--task", "customer_service", "--use-lora",
                        "--output-dir", str(tmp_path / "out"), timeout=180)
    assert result.returncode == 2
    assert "moonshotai/Kimi-K2.5" in result.stderr and "tiny-kimi-k2.5" in result.stderr
    assert "Traceback" not in result.stderr


def test_use_4bit_on_cpu_says_why_it_cannot(tmp_path):
    result = run_script("--model", "tiny-kimi-k2.5-base", "--use-lora", "--use-4bit", "--iterations", "1",
                        "--output-dir", str(tmp_path / "out"), timeout=180)
    assert result.returncode == 2
    assert "--use-4bit" in result.stderr and "CUDA" in result.stderr and "Traceback" not in result.stderr


def test_invalid_flag_value_names_the_field(tmp_path):
    result = run_script("--model", "tiny-kimi-k2.5-base", "--iterations", "0", "--output-dir", str(tmp_path / "o"))
    assert result.returncode == 2 and "num_outer_iterations" in result.stderr


@pytest.mark.slow  # the full Kimi preset: 32 episodes per iteration (minutes on 2 cores)
def test_guide_command_trains_and_reports_with_wandb_offline(tmp_path):
    out = tmp_path / "kimi25_tech_support"
    result = run_script("--model", "tiny-kimi-k2.5-base", "--task", "technical_support", "--use-lora", "--wandb",
                        "--wandb-project", "kimi25-rl-training", "--output-dir", str(out), "--iterations", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["task"] == "technical_support" and records[-1]["iteration"] == 1
    assert (out / "report.md").exists() and (out / "config.yaml").exists()
    assert list((out / "wandb").rglob("*.wandb")), "an offline W&B run was written"


@pytest.mark.slow
@pytest.mark.parametrize("task", ["customer_service", "technical_support", "sales"])
def test_guide_commands_with_the_warm_started_model(tmp_path, task):
    result = run_script("--model", "tiny-kimi-k2.5", "--task", task, "--use-lora",
                        "--output-dir", str(tmp_path / task), "--iterations", "2", timeout=3000)
    assert result.returncode == 0, result.stderr[-3000:]
