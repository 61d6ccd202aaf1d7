"""Run report: PNG plots are real images, report.md carries the numbers, partial metrics work."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from stateset_agents.runs.report import (
    PANELS,
    run_summary_rows,
    summary_table,
    task_boundaries,
    write_report,
)


def _synthetic_run(iterations: int = 6) -> list[dict]:
    """Iterations 1..6: customer_service then sales from iteration 4; eval at 3 and 6."""
    records = []
    for i in range(1, iterations + 1):
        records.append({
            "iteration": i, "task": "customer_service" if i <= 3 else "sales",
            "reward/mean": 0.1 * i, "reward/std": 0.05, "reward/empathy": 0.05 * i,
            "reward/resolution": 0.2, "success_rate": 0.1 * i,
            "clip/low_fraction": 0.01, "clip/high_fraction": 0.02,
            "ratio/mean": 1.0, "ratio/min": 0.9, "ratio/max": 1.1,
            "loss/policy": -0.1, "loss/kl_ref": 0.0, "loss/total": -0.1,
            "kl/ref": 0.001 * i, "entropy": 1.5, "grad_norm": 0.5, "lr": 1e-5,
            "groups/zero_variance": 1, "groups/total": 4,
            "skipped_steps/nonfinite": 1 if i == 2 else 0, "rewards/skipped": 0,
            # rollout 6 s + reward 2 s + update 1 s of a 10 s iteration: 60% / 20% / 10% / 10%.
            "time/rollout": 6.0, "time/reward": 2.0, "time/update": 1.0, "time/iteration": 10.0,
        })
        if i % 3 == 0:
            records.append({"iteration": i, "eval/reward_mean": 0.25 * i, "eval/reward_std": 0.1,
                            "eval/success_rate": 0.5})
    return records


def _assert_png(path):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


def test_full_report_from_metrics_jsonl(tmp_path):
    lines = [json.dumps(r) for r in _synthetic_run()]
    lines.insert(4, json.dumps({"event": "task boundary: customer_service -> sales",
                                "iteration": 3, "time": 0.0}))
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    summary = {"before": {"reward_mean": 0.123, "success_rate": 0.25},
               "after": {"reward_mean": 0.456, "success_rate": 0.75}}

    report = write_report(tmp_path, title="Kimi GSPO run", summary=summary)

    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == sorted(panel.filename for panel in PANELS)
    for name in pngs:
        _assert_png(tmp_path / "plots" / name)
    text = report.read_text()
    assert text.startswith("# Kimi GSPO run")
    assert "6 iterations (1–6), tasks: customer_service → sales." in text
    assert "| reward/mean, first (iter 1) | 0.1 |" in text
    assert "| reward/mean, last (iter 6) | 0.6 (+0.5) |" in text
    assert "| best eval/reward_mean | 1.5 (iter 6) |" in text
    assert "| total time (sum of time/iteration) | 1m 00s |" in text
    assert "rollout 60.0% · reward 20.0% · update 10.0% · other 10.0%" in text
    assert "| zero-variance groups (no gradient) | 6 / 24 (25.0%) |" in text
    assert "| skipped optimizer steps (non-finite) | 1 |" in text
    assert "|  | before | after |" in text and "| reward_mean | 0.123 | 0.456 |" in text
    assert "- iter 3: task boundary: customer_service -> sales" in text
    assert "![Reward (mean ± std, components, eval)](plots/reward.png)" in text


def test_task_boundaries_follow_task_changes():
    records = _synthetic_run()
    assert task_boundaries(records) == [(4.0, "sales")]
    assert task_boundaries([{"iteration": 1}, {"iteration": 2}]) == []


def test_missing_keys_plot_only_what_exists(tmp_path):
    records = [{"iteration": i, "reward/mean": 0.1 * i, "grad_norm": 1.0} for i in range(1, 4)]
    report = write_report(tmp_path, metrics=records)
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["grad_lr.png", "reward.png"]
    for name in pngs:
        _assert_png(tmp_path / "plots" / name)
    text = report.read_text()
    assert "| reward/mean, last (iter 3) | 0.3 (+0.2) |" in text
    assert "eval/" not in text and "time split" not in text


def test_rewriting_removes_stale_plots(tmp_path):
    write_report(tmp_path, metrics=[{"iteration": 1, "reward/mean": 0.5, "grad_norm": 1.0}])
    write_report(tmp_path, metrics=[{"iteration": 1, "success_rate": 0.5}])
    assert [p.name for p in (tmp_path / "plots").glob("*.png")] == ["success_rate.png"]


def test_empty_and_missing_metrics(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        write_report(tmp_path)
    text = write_report(tmp_path, metrics=[], summary={"note": "a|b"}).read_text()
    assert "No metrics were recorded." in text and "| note | a\\|b |" in text
    assert not list((tmp_path / "plots").glob("*.png")) if (tmp_path / "plots").exists() else True


def test_summary_rows_skip_absent_and_nonfinite_values():
    records = [{"iteration": 1, "eval/reward_mean": float("nan")},
               {"iteration": 2, "eval/reward_mean": 0.5}, {"iteration": 3, "time/rollout": 2.0}]
    rows = dict(run_summary_rows(records))
    assert rows == {"best eval/reward_mean": "0.5 (iter 2)",
                    "iteration time split (mean)": "rollout 100.0% · reward 0.0% · update 0.0% · "
                                                   "other 0.0%"}


def test_flat_summary_table():
    assert summary_table({"reward": 0.5, "steps": 10}) == [
        "|  | value |", "|---|---|", "| reward | 0.5 |", "| steps | 10 |"]
