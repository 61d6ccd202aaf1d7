"""Bad inputs to `stateset-agents train`: one `error:` line naming the input and the fix, exit status 2,
nothing written to the output dir. Also: explicit flags win over --config, and --resume continues the
run as it was configured (docs/troubleshooting.md lists every case here with its outcome)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from stateset_agents.cli import main
from stateset_agents.training.config import TrainingConfig

TINY = "tiny-kimi-k2.5-base"
SMALL_RUN = dict(  # a run that trains in seconds on the tiny model
    model_name=TINY, use_lora=True, lora_r=4, lora_alpha=8, num_generations=2, scenarios_per_iteration=2,
    per_device_train_batch_size=1, gradient_accumulation_steps=1, num_outer_iterations=1, learning_rate=1e-2,
    max_new_tokens=8, max_turns=2, rollout_concurrency=4, eval_every=0, save_every=1, report_to=["jsonl"],
    device="cpu", seed=3,
)


def train(*args: str) -> int:
    return main(["train", *args])


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def write_config(path: Path, **values) -> Path:
    path.write_text(yaml.safe_dump({**SMALL_RUN, **values}))
    return path


def damaged_model(tiny_model_dir: Path, tmp_path: Path, damage) -> Path:
    copy = tmp_path / "model"
    copy.mkdir()
    for file in tiny_model_dir.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    damage(copy)
    return copy


def truncate_weights(model: Path) -> None:
    weights = model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda m: (m / "config.json").write_text("{not json"), r"config.json is not valid JSON \(line 1"),
    (truncate_weights, "model.safetensors is truncated or damaged"),
    (lambda m: (m / "model.safetensors").unlink(), r"has no weights \(no \*.safetensors file\)"),
])
def test_damaged_model_directories_are_named(tiny_model_dir, tmp_path, capsys, damage, message):
    model = damaged_model(tiny_model_dir, tmp_path, damage)
    out = tmp_path / "out"
    assert train("--model", str(model), "--output-dir", str(out)) == 2
    assert re.search(message, error_line(capsys))
    assert not out.exists()


def test_unknown_task_lists_the_valid_ones(tmp_path, capsys):
    out = tmp_path / "out"
    assert train("--model", TINY, "--task", "cooking", "--output-dir", str(out)) == 2
    line = error_line(capsys)
    assert "unknown task 'cooking'" in line and "customer_service, customer_service_claims, customer_service_partner, sales, technical_support" in line
    assert not out.exists()


def test_config_file_that_does_not_exist(tmp_path, capsys):
    assert train("--config", str(tmp_path / "missing.yaml")) == 2
    assert "missing.yaml does not exist" in error_line(capsys)


def test_config_file_with_a_yaml_syntax_error_gives_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name: tiny-kimi-k2.5-base\nlearning_rate: [1e-4\nseed: 1\n")
    assert train("--config", str(bad)) == 2
    line = error_line(capsys)
    assert "bad.yaml: YAML syntax error at line" in line


@pytest.mark.parametrize(("values", "field"), [
    (dict(lora_alpha=float("inf")), "lora_alpha: Input should be a finite number (got inf)"),
    (dict(kl_beta=float("inf")), "kl_beta: Input should be a finite number"),
    (dict(learning_rate=float("nan")), "learning_rate: Input should be a finite number"),
    (dict(clip_epsilon_low=0.0, clip_epsilon_high=0.0), "clip_epsilon_low = clip_epsilon_high = 0"),
])
def test_non_finite_and_empty_clip_settings_are_refused(tmp_path, capsys, values, field):
    config = write_config(tmp_path / "c.yaml", output_dir=str(tmp_path / "out"), **values)
    assert ".inf" in config.read_text() or ".nan" in config.read_text() or "clip" in field
    assert train("--config", str(config)) == 2
    assert field in error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_output_dir_that_cannot_be_created_is_checked_before_the_model_loads(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # the model does not exist either: the output dir is checked first, so its error is the one reported
    assert train("--model", str(tmp_path / "no-such-model"), "--output-dir", str(blocker / "out")) == 2
    assert "a-file is a file, not a directory" in error_line(capsys)


def test_explicit_flags_win_over_the_config_file_even_when_they_equal_the_defaults(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", model_name="some/other-model", task="sales", seed=7,
                          output_dir=str(tmp_path / "from-file"))
    args = ["--config", str(config), "--model", TINY, "--task", "customer_service", "--seed", "0",
            "--output-dir", str(tmp_path / "run"), "--iterations", "1"]
    assert train(*args) == 0
    saved = TrainingConfig.from_file(tmp_path / "run" / "config.yaml")
    assert (saved.model_name, saved.task, saved.seed) == (TINY, "customer_service", 0)
    out = capsys.readouterr().out
    assert "Effective config" in out and "model_name: 'tiny-kimi-k2.5-base'" in out


@pytest.fixture(scope="module")
def finished_sales_run(tmp_path_factory):
    """A finished 1-iteration sales run with LoRA r=4, started from a config file (trained once)."""
    root = tmp_path_factory.mktemp("finished")
    out = root / "kimi25_sales"
    assert train("--config", str(write_config(root / "c.yaml", task="sales", output_dir=str(out)))) == 0
    return out


@pytest.fixture()
def sales_run(finished_sales_run, tmp_path):
    """A copy of the finished run under this test's own directory (its config names the new place)."""
    out = tmp_path / "kimi25_sales"
    shutil.copytree(finished_sales_run, out)
    config = TrainingConfig.from_file(out / "config.yaml").replace(output_dir=str(out))
    config.save(out)
    return out


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_resume_with_only_the_output_dir_continues_the_run_as_configured(sales_run, capsys):
    capsys.readouterr()
    assert train("--output-dir", str(sales_run), "--resume", "--iterations", "2") == 0
    saved = TrainingConfig.from_file(sales_run / "config.yaml")
    assert (saved.task, saved.use_lora, saved.lora_r, saved.num_outer_iterations) == ("sales", True, 4, 2)
    assert (sales_run / "checkpoints" / "iter_000002" / "COMPLETE").is_file()
    assert "num_outer_iterations: saved 1, now 2 (allowed on resume" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [
    ["--task", "customer_service"],          # would train another task from the old adapter
    ["--model", "tiny-kimi-k2.5"],           # another base model under the same adapter
    ["--seed", "11"],
])
def test_resume_refuses_flags_that_contradict_the_run_and_changes_nothing(sales_run, capsys, flags):
    before = snapshot(sales_run)
    capsys.readouterr()
    assert train("--output-dir", str(sales_run), "--resume", *flags) == 2
    line = error_line(capsys)
    assert "differ from the run saved in" in line and flags[0].lstrip("-").replace("model", "model_name") in line
    assert snapshot(sales_run) == before


def test_resume_refuses_a_config_file_with_another_lora_rank(sales_run, tmp_path, capsys):
    other = write_config(tmp_path / "other.yaml", task="sales", lora_r=8, output_dir=str(sales_run))
    before = snapshot(sales_run)
    assert train("--config", str(other), "--resume") == 2
    assert "lora_r: saved 4, now 8" in error_line(capsys)
    assert snapshot(sales_run) == before


def test_a_fresh_run_refuses_a_directory_that_holds_a_run(sales_run, capsys):
    before = snapshot(sales_run)
    assert train("--config", str(sales_run / "config.yaml")) == 2
    line = error_line(capsys)
    assert "already holds a run (checkpoint iter_000001)" in line and "--resume" in line
    assert snapshot(sales_run) == before


def test_a_second_demo_replaces_the_first_but_no_other_run(tmp_path):
    from stateset_agents.demo import demo_config, replace_earlier_demo

    earlier, other = tmp_path / "demo", tmp_path / "other"
    demo_config(str(earlier), iterations=12, seed=0).save(earlier)
    demo_config(str(other), iterations=12, seed=0).replace(learning_rate=1e-3).save(other)
    for run in (earlier, other):
        (run / "checkpoints" / "iter_000004").mkdir(parents=True)
        (run / "checkpoints" / "iter_000004" / "COMPLETE").write_text("4")
    replace_earlier_demo(demo_config(str(earlier), iterations=6, seed=1))
    replace_earlier_demo(demo_config(str(other), iterations=12, seed=0))
    assert not earlier.exists() and (other / "checkpoints" / "iter_000004").is_dir()


@pytest.mark.parametrize(("flags", "use_lora"), [([], True), (["--use-lora"], True), (["--no-lora"], False)])
def test_lora_is_the_default_and_no_lora_asks_for_full_fine_tuning(tmp_path, flags, use_lora):
    import argparse

    from stateset_agents.cli import add_training_flags, config_from_args

    parser = argparse.ArgumentParser()
    add_training_flags(parser)
    config = config_from_args(parser.parse_args(["--output-dir", str(tmp_path / "o"), *flags]))
    assert config.use_lora is use_lora
