"""`stateset-agents eval`: intervals, determinism under --seed, --against pairing, adapter resolution, bad inputs.

Runs the real command in-process on the tiny base model with a random (non-zero) LoRA adapter saved as a
training run's checkpoints; episodes are kept short (2 scenarios, 1-token-budget turns) to stay fast.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from stateset_agents.cli import main
from stateset_agents.commands.eval_command import (
    EvalInputError, model_identity, resolve_weights, student_t_quantile, t_interval,
)

MODEL = "tiny-kimi-k2.5-base"
FAST = ["--scenarios", "2", "--max-turns", "2", "--max-new-tokens", "8"]


def run_eval(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["eval", "--model", MODEL, *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def lora_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A run directory with two complete checkpoints of a random LoRA adapter (iter_000002 differs from 1)."""
    import torch
    from peft import get_peft_model

    from stateset_agents.models.loading import LoadSettings, load_model
    from stateset_agents.models.lora_targets import resolve_lora_targets
    from stateset_agents.runs.checkpoints import save_checkpoint

    loaded = load_model(str(tiny_model_dir), LoadSettings(device="cpu"))  # its own copy: PEFT wraps it in place
    plan = resolve_lora_targets(loaded.model, None, include_experts=False)
    torch.manual_seed(0)
    peft_model = get_peft_model(loaded.model, plan.build_lora_config(4, 8, init_lora_weights=False))
    run = tmp_path_factory.mktemp("lora_run")
    save_checkpoint(run, 1, peft_model, None, None, {}, keep_last=None)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(3.0)
    save_checkpoint(run, 2, peft_model, None, None, {}, keep_last=None)
    return run


# ----------------------------------------------------------------------------- statistics (no model)


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (4, 2.7764), (9, 2.2622), (29, 2.0452), (1000, 1.9623)])
def test_t_quantile_matches_the_tables(df, expected):
    assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_t_interval_by_hand():
    values = [0.0, 1.0, 1.0, 0.0, 1.0]  # mean 0.6, sd sqrt(0.3), t(0.975, 4) = 2.776445
    stats = t_interval(values)
    half = 2.776445 * math.sqrt(0.3) / math.sqrt(5)
    assert stats["mean"] == pytest.approx(0.6)
    assert (stats["ci_low"], stats["ci_high"]) == pytest.approx((0.6 - half, 0.6 + half), abs=1e-5)
    assert t_interval(values, bounds=(0.0, 1.0))["ci_high"] == 1.0  # clipped
    assert t_interval([0.5]) == {"mean": 0.5, "ci_low": None, "ci_high": None, "n": 1}


def test_model_identity_compares_names_not_paths():
    assert model_identity("/cache/models/tiny-kimi-k2.5-base/") == model_identity("tiny-kimi-k2.5-base")
    assert model_identity("/hf/hub/models--moonshotai--Kimi-K2.5/snapshots/abc123") == "moonshotai/kimi-k2.5"
    assert model_identity("moonshotai/Kimi-K2.5") == "moonshotai/kimi-k2.5"
    assert model_identity("tiny-kimi-k2.5") != model_identity("tiny-kimi-k2.5-base")


# ----------------------------------------------------------------------------- adapter resolution (no model)


def test_adapter_resolution_run_checkpoint_and_adapter_dir(lora_run):
    latest = resolve_weights(str(lora_run))
    assert latest.kind == "adapter" and latest.checkpoint == "iter_000002"
    assert latest.path == lora_run / "checkpoints" / "iter_000002" / "adapter"
    assert "latest checkpoint iter_000002" in latest.description
    first = resolve_weights(str(lora_run / "checkpoints" / "iter_000001"))
    assert first.path == lora_run / "checkpoints" / "iter_000001" / "adapter" and first.run_dir == lora_run
    direct = resolve_weights(str(first.path))
    assert direct.path == first.path and direct.run_dir is None
    with pytest.raises(EvalInputError, match="neither a PEFT adapter"):
        resolve_weights(str(lora_run / "checkpoints"))


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("args, message", [
    (["--adapter", "/nonexistent/adapter"], "adapter path /nonexistent/adapter does not exist"),
    (["--task", "customer_service,nope"], "unknown task 'nope'"),
    (["--samples", "0"], "--samples must be at least 1, got 0"),
    (["--scenarios", "-1"], "--scenarios must be at least 1"),
    (["--json", "/nonexistent/dir/out.json"], "directory /nonexistent/dir does not exist"),
    (["--against", "/nonexistent/run"], "--against /nonexistent/run: not an adapter, run or checkpoint directory"),
])
def test_bad_input_is_one_error_line_and_exit_2(capsys, args, message):
    code, out, err = run_eval(capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err


def test_adapter_for_another_base_model_is_refused(lora_run, tmp_path, capsys):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(lora_run / "checkpoints" / "iter_000001" / "adapter", adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/somewhere/models/tiny-kimi-k2.5"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    code, _, err = run_eval(capsys, "--adapter", str(adapter))
    assert code == 2 and err.count("\n") == 1
    assert "was trained on base model 'tiny-kimi-k2.5'" in err and f"not on --model '{MODEL}'" in err


def test_incomplete_checkpoint_and_empty_run_are_refused(lora_run, tmp_path, capsys):
    import shutil

    partial = tmp_path / "iter_000003"
    shutil.copytree(lora_run / "checkpoints" / "iter_000001", partial)
    (partial / "COMPLETE").unlink()
    code, _, err = run_eval(capsys, "--adapter", str(partial))
    assert code == 2 and "is incomplete (no COMPLETE marker" in err
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    code, _, err = run_eval(capsys, "--adapter", str(tmp_path / "run"))
    assert code == 2 and "has no complete checkpoint" in err


def test_adapter_whose_tensors_do_not_fit_is_refused(lora_run, tmp_path, capsys):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    adapter = tmp_path / "adapter"
    shutil.copytree(lora_run / "checkpoints" / "iter_000001" / "adapter", adapter)
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    name = next(key for key in weights if "lora_A" in key)
    weights[name] = torch.zeros(weights[name].shape[0] + 3, weights[name].shape[1])
    save_file(weights, str(adapter / "adapter_model.safetensors"))
    code, _, err = run_eval(capsys, "--adapter", str(adapter), *FAST)
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # (stderr also has a load bar)
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert f"does not fit model {MODEL}" in errors[0] and "size mismatch" in errors[0]


# ----------------------------------------------------------------------------- determinism and seeding


def test_same_seed_same_json_another_seed_other_samples(lora_run, tmp_path, capsys):
    outputs = []
    for seed, name in (("7", "a.json"), ("7", "b.json"), ("8", "c.json")):
        code, out, err = run_eval(capsys, "--adapter", str(lora_run), "--seed", seed, "--json",
                                  str(tmp_path / name), *FAST)
        assert code == 0, err
        outputs.append(out)
    a, b, c = ((tmp_path / name).read_text() for name in ("a.json", "b.json", "c.json"))
    assert a == b  # byte for byte: no timings or dates in the report
    first, other = json.loads(a), json.loads(c)
    episodes = first["tasks"]["customer_service"]["episodes"]
    assert [e["seed"] for e in episodes] == [(7 * 1_000_003 + i) * 1_000_003 for i in range(2)]
    digests = [e["policy"]["sample_sha256"] for e in episodes]
    other_digests = [e["policy"]["sample_sha256"] for e in other["tasks"]["customer_service"]["episodes"]]
    assert all(x != y for x, y in zip(digests, other_digests)), "another seed samples other conversations"
    assert first["policies"]["policy"]["checkpoint"] == "iter_000002"
    assert "latest checkpoint iter_000002" in outputs[0]  # the output says which checkpoint was used
    reward = first["tasks"]["customer_service"]["policy"]["metrics"]["reward"]
    assert reward["n"] == 2 and reward["ci_low"] <= reward["mean"] <= reward["ci_high"]
    assert "95% intervals: Student t interval over scenario means" in outputs[0]
    # 8 tokens a turn: turns are cut off before their end, and the report counts them
    policy = first["tasks"]["customer_service"]["policy"]
    records = [e["policy"] for e in episodes]
    cut_off = sum(r["cut_off_turns"] for r in records) / sum(r["turns"] for r in records)
    assert 0 < cut_off == policy["cut_off_turns"] <= 1
    assert f"turns cut off at --max-new-tokens 8 before their end: {{'policy': '{cut_off:.1%}'}}" in outputs[0]


def test_cut_off_share_counts_unterminated_turns():
    from stateset_agents.core.completion import ParsedCompletion
    from stateset_agents.core.trajectory import Trajectory, TurnSample
    from stateset_agents.training.evaluation import cut_off_share

    def episode(*terminated: bool) -> Trajectory:
        turns = [TurnSample([1], [2], [0.0], ParsedCompletion(terminated=t)) for t in terminated]
        return Trajectory(messages=[], turns=turns, state={}, scenario={})

    assert episode(True, False, False).num_cut_off_turns == 2
    assert cut_off_share([episode(True, False), episode(True, True)]) == 0.25
    assert cut_off_share([episode()]) == 0.0  # no turns: nothing cut off


def test_episode_seeds_are_those_of_training_evaluate(monkeypatch):
    """`eval` seeds episode (i, k) exactly as `training.evaluation.evaluate` does."""
    from stateset_agents.commands.eval_command import episode_seed
    from stateset_agents.tasks.registry import get_task
    from stateset_agents.training import evaluation

    captured = []

    class Stop(Exception):
        pass

    def capture(agent, specs, **kwargs):
        captured.extend(specs)
        raise Stop

    monkeypatch.setattr(evaluation, "run_episodes", capture)
    task = get_task("customer_service")
    with pytest.raises(Stop):
        evaluation.evaluate(None, task, task.eval_scenarios()[:3], None, samples_per_scenario=2, seed=11)
    assert [s.seed for s in captured] == [episode_seed(11, i, k) for i in range(3) for k in range(2)]


# ----------------------------------------------------------------------------- --against


def test_against_the_same_adapter_differs_by_exactly_zero(lora_run, tmp_path, capsys):
    code, out, err = run_eval(capsys, "--adapter", str(lora_run), "--against", str(lora_run), "--samples", "2",
                              "--json", str(tmp_path / "same.json"), *FAST)
    assert code == 0, err
    report = json.loads((tmp_path / "same.json").read_text())
    task = report["tasks"]["customer_service"]
    assert task["difference"]["pairs"] == 4
    for name, stats in task["difference"]["metrics"].items():
        assert (stats["mean"], stats["ci_low"], stats["ci_high"]) == (0.0, 0.0, 0.0), name
    assert all(e["policy"]["sample_sha256"] == e["against"]["sample_sha256"] for e in task["episodes"])
    assert "policy - against" in out


def test_against_the_base_model_pairs_other_samples(lora_run, tmp_path, capsys):
    code, out, err = run_eval(capsys, "--adapter", str(lora_run / "checkpoints" / "iter_000001"), "--against", MODEL,
                              "--task", "customer_service,sales", "--json", str(tmp_path / "base.json"), *FAST)
    assert code == 0, err
    report = json.loads((tmp_path / "base.json").read_text())
    assert report["policies"]["against"] == {"model": MODEL, "adapter": None, "weights": None, "weights_kind": None,
                                             "checkpoint": None, "description": f"{MODEL} (no adapter)"}
    for name in ("customer_service", "sales"):
        task = report["tasks"][name]
        pairs = [(e["policy"], e["against"]) for e in task["episodes"]]
        assert any(p["sample_sha256"] != a["sample_sha256"] for p, a in pairs), "the adapter changes the samples"
        diff = task["difference"]["metrics"]["reward"]["mean"]
        means = [task[label]["metrics"]["reward"]["mean"] for label in ("policy", "against")]
        assert diff == pytest.approx(means[0] - means[1], abs=1e-12)
    assert f"against: {MODEL} (no adapter)" in out and "checkpoint " in out


def test_full_fine_tune_checkpoint_loads_over_the_base_and_the_base_is_reloaded(tiny_model_dir, tmp_path, capsys):
    """A checkpoint holding model/ (full fine-tuning) loads over a fresh copy of the base; --against the base
    reloads it clean: were either not so, both sides would sample the same tokens."""
    import torch

    from stateset_agents.models.loading import LoadSettings, load_model
    from stateset_agents.runs.checkpoints import save_checkpoint

    loaded = load_model(str(tiny_model_dir), LoadSettings(device="cpu"))
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in loaded.model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    save_checkpoint(tmp_path / "full_run", 1, loaded.model, None, None, {}, keep_last=None)
    code, out, err = run_eval(capsys, "--adapter", str(tmp_path / "full_run"), "--against", MODEL,
                              "--json", str(tmp_path / "full.json"), *FAST)
    assert code == 0, err
    report = json.loads((tmp_path / "full.json").read_text())
    # the console wraps long lines (where depends on the temporary path's length): compare with the wrapping undone
    assert report["policies"]["policy"]["weights_kind"] == "full" and "full fine-tune" in " ".join(out.split())
    episodes = report["tasks"]["customer_service"]["episodes"]
    assert all(e["policy"]["sample_sha256"] != e["against"]["sample_sha256"] for e in episodes)


def test_a_runs_config_supplies_the_defaults_and_flags_win(lora_run, tmp_path):
    import argparse
    import shutil

    from stateset_agents.commands.eval_command import add_eval_arguments, settings_from_args
    from stateset_agents.tasks.registry import get_task
    from stateset_agents.training.kimi25_config import get_kimi25_config

    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    get_kimi25_config(model_name=MODEL, task="sales", output_dir=str(run), max_turns=3, max_new_tokens=5,
                      thinking=False, system_prompt="Sell politely.").save()
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    weights = resolve_weights(str(run))
    settings = settings_from_args(parser.parse_args(["--model", MODEL, "--max-turns", "2"]), weights)
    assert (settings.max_turns, settings.max_new_tokens, settings.thinking, settings.temperature) == (2, 5, False, 0.6)
    assert f"defaults from {run / 'config.yaml'}" in settings.source
    assert settings.task_with_prompt(get_task("sales")).system_prompt == "Sell politely."
    assert settings.task_with_prompt(get_task("customer_service")) is get_task("customer_service")  # not its task
