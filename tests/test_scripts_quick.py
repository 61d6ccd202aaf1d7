"""Every benchmark and experiment script still runs: each one's `--quick` mode, as a subprocess, must
exit 0 and write its output. Slow (a few minutes in all on 2 CPU cores): `make test-slow`.

The quick modes use the base tiny model (`tiny-kimi-k2.5-base`, built in seconds into the test
cache) and the bench model `tiny`, never the warm-started model, so nothing here builds it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HAS_TRL = importlib.util.find_spec("trl") is not None
NEEDS_TRL = pytest.mark.skipif(not HAS_TRL, reason="needs trl (the bench extra: pip install -e '.[bench]')")


def vllm_missing() -> bool:
    """No vLLM environment (`make vllm-env`, or STATESET_VLLM_PYTHON); asked only when a vLLM case runs."""
    from stateset_agents.rollout.vllm_server import VLLMNotAvailableError, find_vllm_python

    try:
        find_vllm_python()
    except VLLMNotAvailableError:
        return True
    return False


# the condition is a string: pytest evaluates it at setup, so collecting the other cases starts no probe
NEEDS_VLLM = [pytest.mark.vllm, pytest.mark.skipif("vllm_missing()", reason=(
    "needs the vLLM environment (`make vllm-env`, or STATESET_VLLM_PYTHON); the script itself then exits 0 "
    "with that message"))]

# script, its arguments (OUT = a fresh directory), the files it must write (relative to OUT; a
# trailing "*" is a glob that must match at least one file)
SCRIPTS = [
    ("benchmarks/run_benchmarks.py", ["--quick", "--out-dir", "OUT/bench"] + ([] if HAS_TRL else ["--skip-trl"]),
     ["bench/results.json", "bench/results.md"]),
    ("benchmarks/bench_ours.py", ["--quick", "--out", "OUT/ours.json"], ["ours.json"]),
    pytest.param("benchmarks/bench_trl.py", ["--quick", "--out", "OUT/trl.json"], ["trl.json"], marks=NEEDS_TRL),
    ("benchmarks/bench_rollout.py", ["--quick", "--out", "OUT/rollout.json"], ["rollout.json"]),
    ("benchmarks/distributed_scaling.py", ["--quick", "--out-dir", "OUT/scaling"],
     ["scaling/results.json", "scaling/results.md"]),
    ("benchmarks/generation_throughput.py", ["--quick", "--out", "OUT/throughput.json"], ["throughput.json"]),
    ("benchmarks/profile_iteration.py", ["--quick", "--out", "OUT/profile.txt"], ["profile.txt"]),
    pytest.param("benchmarks/vllm_rollouts.py", ["--quick", "--out-dir", "OUT/vllm"],
                 ["vllm/results.json", "vllm/results.md"], marks=NEEDS_VLLM),
    ("benchmarks/sft_heldout_nll.py", ["--quick", "--out", "OUT/nll.json"], ["nll.json"]),
    ("benchmarks/mla_expansion.py", ["--quick", "--out", "OUT/mla.json"], ["mla.json"]),
    ("experiments/action_choice.py", ["--quick", "--out", "OUT/choice.json"], ["choice.json"]),
    ("experiments/temperature_probe.py", ["--quick", "--temperatures", "1.0,0", "--out", "OUT/temps.json"],
     ["temps.json"]),
    ("experiments/continue_warm_start.py", ["--quick", "--out", "OUT/stage"], ["stage/screen.json",
                                                                              "stage/model.safetensors"]),
    ("experiments/copy_drill_probe.py", ["--quick", "--out", "OUT/probe.json"], ["probe.json"]),
    ("experiments/demo_seeds.py", ["--quick", "--results", "OUT", "--output-root", "OUT/runs"],
     ["demo_seeds_quick_tiny-kimi-k2.5-base_*.json", "demo_seeds_quick_tiny-kimi-k2.5-base_*.md"]),
    ("experiments/habit_rate.py", ["--quick", "--json", "OUT/habit.json"], ["habit.json"]),
    ("experiments/family_breakdown.py", ["experiments/results/sales/eval_v5_three_tasks.json", "--markdown",
                                         "OUT/families.md"], ["families.md"]),  # reads a committed report
    ("experiments/forgetting.py", ["--quick", "--iterations-on-b", "2", "--eval-every-b", "1",
                                   "--output", "OUT/forgetting_k2.5", "--runs-dir", "OUT/runs"],
     ["forgetting_k2.5.json", "forgetting_k2.5.md", "forgetting_k2.5.png"]),  # a dot in the prefix
    ("experiments/reward_breakdown.py", ["--quick", "--out", "OUT/breakdown.json"], ["breakdown.json"]),
    ("experiments/warm_start_experiment.py", ["--quick", "--out", "OUT/exp"], ["exp/out/warm_start.json",
                                                                              "exp/screen.json"]),
    ("experiments/warm_start_quality.py", ["--quick", "--results", "OUT"],
     ["warm_start_quality_quick_tiny-kimi-k2.5-base_*.json", "warm_start_quality_quick_tiny-kimi-k2.5-base_*.md"]),
    ("experiments/warm_start_token_loss.py", ["--quick", "--results", "OUT"],
     ["warm_start_token_loss_quick_tiny-kimi-k2.5-base_*.json"]),
]


def test_every_script_has_a_quick_case():
    listed = {(p.values[0] if hasattr(p, "values") else p[0]) for p in SCRIPTS}
    present = {str(path.relative_to(REPO)) for folder in ("benchmarks", "experiments")
               for path in (REPO / folder).glob("*.py")}
    helpers = {"benchmarks/common.py", "benchmarks/bench_task.py",  # imported by the scripts, not run
               "experiments/partner_rehearsal.py"}
    assert present - helpers == listed


@pytest.mark.slow
@pytest.mark.parametrize("script, arguments, outputs", SCRIPTS)
def test_quick_mode_runs_and_writes_its_output(tmp_path, script, arguments, outputs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
           "STATESET_AGENTS_CACHE": os.environ.get("STATESET_AGENTS_CACHE", str(REPO / ".cache" / "test-models"))}
    command = [sys.executable, str(REPO / script), *[a.replace("OUT", str(tmp_path)) for a in arguments]]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{script} --quick failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    for pattern in outputs:
        found = list(tmp_path.glob(pattern))
        assert found and all(path.stat().st_size > 0 for path in found), f"{script} did not write {pattern}"


def test_experiment_configs_are_the_runs_they_describe():
    """The YAML configs are what the experiments trained (the demo's settings; the forgetting arms)."""
    from stateset_agents.demo import DEMO_ITERATIONS, demo_config
    from stateset_agents.training.config import TrainingConfig

    configs = REPO / "experiments" / "configs"
    demo = TrainingConfig.from_file(configs / "demo_seeds.yaml")
    assert demo == demo_config("outputs/demo_seeds/seed0", DEMO_ITERATIONS, 0)
    replay = TrainingConfig.from_file(configs / "forgetting_replay_lwf.yaml")
    none = TrainingConfig.from_file(configs / "forgetting_none.yaml")
    assert replay.continual_strategy == "replay_lwf" and none.continual_strategy == "none"
    assert replay.replace(continual_strategy="none", output_dir=none.output_dir) == none
    assert (replay.replay_buffer_size, replay.replay_ratio) == (2000, 0.5)
    # stop 34 (FORGETTING.md, first section): forward LwF KL at 0.5 on the replayed episodes, 8 then 16 iterations
    assert (replay.kl_penalty_beta, replay.lwf_divergence, replay.task_iterations) == (0.5, "forward", [8, 16])
    results = REPO / "experiments/results/forgetting_v6_forward"
    assert TrainingConfig.from_file(results / "config_replay_lwf_forward_beta0.5.yaml") == replay
    # stop 34's one-seed screen: the same at the guide's 0.1
    screen = TrainingConfig.from_file(results / "config_replay_lwf_forward_beta0.1.yaml")
    assert screen == replay.replace(kl_penalty_beta=0.1)
    # stop 33: the same at 1.0, before task_iterations existed (the script set the lengths)
    forward = TrainingConfig.from_file(results / "config_replay_lwf_forward_beta1.yaml")
    assert forward.replace(num_outer_iterations=24, task_iterations=[8, 16], kl_penalty_beta=0.5) == replay
    assert replay.model_name == "tiny-kimi-k2.5" and replay.task == "continual_two_stores"
    assert (replay.clip_epsilon_low, replay.clip_epsilon_high) == (demo.clip_epsilon_low, demo.clip_epsilon_high)
    assert replay.task_sequence == ["customer_service", "customer_service_claims"]
    assert replay.lwf_rows == "replayed"
    # stops 28 and 32 (FORGETTING.md's v6 sections): the guide's reverse KL at 0.1, the trainer's equal split
    stop28 = replay.replace(kl_penalty_beta=0.1, lwf_divergence="reverse", num_outer_iterations=16, task_iterations=None)
    assert TrainingConfig.from_file(REPO / "experiments/results/forgetting_v6/config_replay_lwf_replayed.yaml") == stop28
    # stop 29's runs on the withdrawn warm start v7 (FORGETTING.md): the same config at 64 tokens
    v7 = TrainingConfig.from_file(REPO / "experiments/results/forgetting_v7/config_replay_lwf.yaml")
    assert v7 == stop28.replace(max_new_tokens=64)
    recorded = json.loads((REPO / "experiments/results/forgetting_v7/forgetting_v7_tokens64_seeds012.json").read_text())
    newer = {"output_dir", "seed", "continual_strategy", "lwf_divergence", "task_iterations"}  # the last two: stop 33
    assert recorded["config"] == v7.model_dump(mode="json", exclude=newer)


# What each variant of the demo's run changes (experiments/LOG.md, "RL's budget"); nothing else may differ from
# their base, the demo's run of that time (rl_budget/base.yaml).
RL_BUDGET_VARIANTS = {
    "lr5e3": dict(learning_rate=5e-3),
    "s8": dict(scenarios_per_iteration=8, per_device_train_batch_size=16, num_outer_iterations=6),
    "clip10": dict(clip_epsilon_low=1.5e-3, clip_epsilon_high=2.5e-3),
    "grpo": dict(loss_type="grpo", clip_epsilon_low=0.2, clip_epsilon_high=0.28),
    "curve40": dict(num_outer_iterations=40, eval_every=5, eval_scenarios=60, save_every=10),
    # curve_kl: 20 iterations, then resumed to 30 (--resume --iterations 30)
    "curve_kl": dict(num_outer_iterations=20, eval_every=5, eval_scenarios=60, save_every=10, kl_beta=0.1),
    "curve_kl_lr4e3": dict(num_outer_iterations=16, eval_every=4, eval_scenarios=60, save_every=8, kl_beta=0.1,
                           learning_rate=4e-3),
}


def test_rl_budget_variants_differ_from_their_base_only_where_they_say():
    from stateset_agents.training.config import TrainingConfig

    configs = REPO / "experiments" / "configs"
    base = TrainingConfig.from_file(configs / "rl_budget" / "base.yaml")
    demo = TrainingConfig.from_file(configs / "demo_seeds.yaml")
    # the demo has since widened its clip range and added the reference KL, and changed nothing else
    assert base == demo.replace(output_dir="outputs/rl_budget/base", clip_epsilon_low=1.5e-4, clip_epsilon_high=2.5e-4,
                                kl_beta=0.0)
    found = {path.stem for path in (configs / "rl_budget").glob("*.yaml")} - {"base"}
    assert found == set(RL_BUDGET_VARIANTS)
    for name, changes in RL_BUDGET_VARIANTS.items():
        variant = TrainingConfig.from_file(configs / "rl_budget" / f"{name}.yaml")
        assert variant == base.replace(output_dir=f"outputs/rl_budget/{name}", **changes), name


def test_benchmark_settings_come_from_the_preset():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import common
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from stateset_agents.training.kimi25_config import KIMI25_PRESET

    setting = common.SETTINGS["gspo_beta0"]
    assert (setting.clip_low, setting.clip_high) == (KIMI25_PRESET["clip_epsilon_low"],
                                                     KIMI25_PRESET["clip_epsilon_high"])
    assert setting.group_size == KIMI25_PRESET["num_generations"]
    assert setting.episodes_per_step * setting.steps_per_rollout == setting.prompts_per_iteration * setting.group_size


def test_family_breakdown_groups_a_reports_episodes_by_family():
    sys.path.insert(0, str(REPO / "experiments"))
    from family_breakdown import family_rows

    report = json.loads((REPO / "experiments/results/sales/eval_v5_three_tasks.json").read_text())
    rows = {(r["task"], r["family"]): r for r in family_rows([report])}
    episodes = report["tasks"]["customer_service"]["episodes"]
    assert sum(r["episodes"] for (task, _), r in rows.items() if task == "customer_service") == len(episodes)
    solved = sum(e["policy"]["success"] for e in episodes)
    assert sum(r["success"] * r["episodes"] for (task, _), r in rows.items() if task == "customer_service") == solved
    assert rows[("customer_service", "late_delivery")]["success"] == 1.0  # both of its episodes were solved
    pooled = {(r["task"], r["family"]): r for r in family_rows([report, report])}
    assert all(pooled[key]["episodes"] == 2 * row["episodes"] and pooled[key]["success"] == row["success"]
               for key, row in rows.items())


@pytest.fixture(scope="module")
def forgetting():
    """experiments/forgetting.py as a module (experiments/ is not a package)."""
    sys.path.insert(0, str(REPO / "experiments"))
    try:
        import forgetting as module
    finally:
        sys.path.remove(str(REPO / "experiments"))
    return module


def test_forgetting_component_breakdown_sums_to_the_reward_change(forgetting):
    """The per-component rows of A's gain add up to the reward rows (the reward is the weighted mean)."""
    from stateset_agents.tasks.registry import get_task

    weights = forgetting.reward_weights(get_task("customer_service").default_reward())
    assert sum(weights.values()) == pytest.approx(1.0)

    def measured(**components):
        full = {name: components.get(name, 0.0) for name in weights}
        return {"reward_mean": sum(weights[n] * v for n, v in full.items()), "success_rate": 0.0, "episodes": 4,
                "components": full}

    before, after_a = measured(goal_reached=0.25, tool_use=0.5), measured(goal_reached=0.75, tool_use=0.75)
    arms = {"none": {"A before": before, "A after A": after_a, "A after B": measured(goal_reached=0.25, tool_use=0.75),
                     "B after B": before},
            "replay_lwf": {"A before": before, "A after A": after_a, "A after B": after_a, "B after B": before}}
    rows = forgetting.component_breakdown({0: arms}, weights)
    for column, strategy, measure in (("A gain", "none", "A after A"), ("kept after B: none", "none", "A after B"),
                                      ("kept after B: replay_lwf", "replay_lwf", "A after B")):
        expected = arms[strategy][measure]["reward_mean"] - before["reward_mean"]
        assert sum(row[column] for row in rows.values()) == pytest.approx(expected)
    assert rows["goal_reached"]["kept after B: none"] == 0.0 and rows["tool_use"]["kept after B: none"] > 0
    old = {strategy: {m: {k: v for k, v in r.items() if k != "components"} for m, r in arm.items()}
           for strategy, arm in arms.items()}
    assert forgetting.component_breakdown({0: old}, weights) == {}  # results from before components were recorded


def test_forgetting_merge_keeps_a_seed_run_twice(forgetting, tmp_path):
    """--merge of two runs of one seed (another machine or commit) keeps both, not the last one."""
    results = REPO / "experiments/results/forgetting_v6"
    first, rerun = results / "forgetting_v6_replayed_seed0.json", results / "forgetting_v6_replayed_seeds01_rerun.json"
    forgetting.merge_results([first, rerun], tmp_path / "merged", ["--merge", "..."])
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert list(merged["runs"]) == ["0", "0#2", "1"]
    assert merged["runs"]["0"] == json.loads(first.read_text())["runs"]["0"]
    assert merged["runs"]["0#2"] == json.loads(rerun.read_text())["runs"]["0"]
    assert "0, 0#2, 1 (N#2: a second run of seed N)" in (tmp_path / "merged.md").read_text()


def test_forgetting_merge_refuses_runs_of_different_configs(forgetting, tmp_path):
    first = json.loads((REPO / "experiments/results/forgetting_v6/forgetting_v6_replayed_seed2.json").read_text())
    other = {**first, "config": {**first.get("config", {}), "max_new_tokens": 64}}
    (tmp_path / "a.json").write_text(json.dumps({**first, "config": {**first.get("config", {}), "max_new_tokens": 48}}))
    (tmp_path / "b.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="different configs"):
        forgetting.merge_results([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "merged", ["--merge"])
    forgetting.merge_results([tmp_path / "b.json", tmp_path / "b.json"], tmp_path / "merged", ["--merge"])
    assert (tmp_path / "merged.md").is_file()


def test_forgetting_merge_refuses_runs_with_another_b_phase(forgetting, tmp_path):
    """Results from before --iterations-on-b trained B as long as A; they merge with each other, not with a longer B."""
    results = REPO / "experiments/results"
    equal = results / "forgetting_v6/forgetting_v6_replayed_seed2.json"
    longer = results / "forgetting_v6_longb/v6_b16_seed0.json"
    assert "iterations_on_b" not in json.loads(equal.read_text())
    with pytest.raises(SystemExit, match="iterations_on_b"):
        forgetting.merge_results([equal, longer], tmp_path / "merged", ["--merge"])
    forgetting.merge_results([longer, results / "forgetting_v6_longb/v6_b16_seeds12.json"], tmp_path / "merged",
                             ["--merge"])
    assert "8 iterations on A, 16 on B; seeds 0, 1, 2" in (tmp_path / "merged.md").read_text()


def test_partner_rehearsal_tasks_keep_shopcos_policy_on_partner_orders(monkeypatch):
    from stateset_agents.tasks import registry
    from stateset_agents.tasks.generate_data import fresh_scenarios
    from stateset_agents.tasks.registry import get_task

    # the registration stays inside this test: other tests list the registered tasks
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))
    monkeypatch.setattr(registry, "_INSTANCES", dict(registry._INSTANCES))
    monkeypatch.syspath_prepend(str(REPO / "experiments"))
    monkeypatch.delitem(sys.modules, "partner_rehearsal", raising=False)
    import partner_rehearsal  # noqa: F401  (registers the tasks)

    legacy, half = fresh_scenarios(get_task("customer_service_partner_legacy"), 60, 3), \
        fresh_scenarios(get_task("customer_service_partner_half"), 60, 3)
    assert all(o["seller"] == "partner" for s in legacy + half for o in s["world"]["orders"].values())
    escalated = lambda scenarios: sum(  # noqa: E731  refunds and returns sent to the claims team
        s["family"] in ("damaged_refund", "photo_refund", "photo_deny", "return")
        and "escalate" in [c["tool"] for c in s["solution"]["calls"]] for s in scenarios)
    assert escalated(legacy) == 0 and 10 <= escalated(half) <= 30  # half of 40
    shipped = {order for name in ("customer_service", "customer_service_partner") for split in ("train", "eval")
               for s in get_task(name).scenarios(split) for order in s["world"]["orders"]}
    assert not shipped & {order for s in legacy + half for order in s["world"]["orders"]}


def test_forgetting_curve_table_by_hand(forgetting):
    """The table along B's phase: A's gain kept and B's gain at each evaluated B length, the end included."""
    def held(reward, success):
        return {"reward_mean": reward, "success_rate": success, "episodes": 4}

    def arm(a_mid, a_end, b_mid, b_end):
        return {"A before": held(0.2, 0.0), "A after A": held(0.4, 0.5), "B before": held(0.1, 0.0),
                "B after A": held(0.1, 0.0), "A after B": held(*a_end), "B after B": held(*b_end)}, \
               [{"b_iterations": 4, "A": held(*a_mid), "B": held(*b_mid)}]

    none, none_curve = arm((0.3, 0.25), (0.2, 0.0), (0.5, 0.25), (0.6, 0.5))
    replay, replay_curve = arm((0.4, 0.5), (0.35, 0.5), (0.3, 0.0), (0.5, 0.25))
    run = {"none": none, "replay_lwf": replay, "curves": {"none": none_curve, "replay_lwf": replay_curve}}
    other_points = {**run, "curves": {"none": [], "replay_lwf": []}}  # evaluated only at the end: left out
    lines = forgetting.curve_table({0: run, 1: {"none": none, "replay_lwf": replay}, 2: other_points}, on_b=8)
    rows = [line for line in lines if line.startswith("| 4 |") or line.startswith("| 8 |")]
    assert rows == ["| 4 | none | 50% (50%) | 50% (50%) | +0.400 (+0.400) | +0.250 (+0.250) |",
                    "| 4 | replay_lwf | 100% (100%) | 100% (100%) | +0.200 (+0.200) | +0.000 (+0.000) |",
                    "| 8 | none | 0% (0%) | 0% (0%) | +0.500 (+0.500) | +0.500 (+0.500) |",
                    "| 8 | replay_lwf | 75% (75%) | 100% (100%) | +0.400 (+0.400) | +0.250 (+0.250) |"]
    assert "(seeds 0)" in lines[1]  # seed 1 recorded no curve, seed 2 another one
    assert forgetting.curve_table({1: {"none": none, "replay_lwf": replay}}, on_b=8) == []
