"""Metrics: the logged keys of a real run against METRIC_DOCS, reductions, sinks (metrics.jsonl append/resume,
W&B offline run contents, console without a TTY, log_every)."""

from __future__ import annotations

import json
import struct
import time
import sys
from pathlib import Path

import pytest

from stateset_agents.runs.metrics import (
    LLM_CONDITIONS,
    METRIC_CONDITIONS,
    METRIC_DOCS,
    MetricsLogger,
    describe_metric,
    format_console_line,
    read_metrics,
    reduce_metric,
    split_events,
)

def _metrics(iteration: int) -> dict:
    return {"iteration": iteration, "task": "customer_service", "reward/mean": 0.25 * iteration,
            "reward/std": 0.125, "reward/empathy": 0.5, "success_rate": 0.5,
            "clip/low_fraction": 0.0, "clip/high_fraction": 0.0625, "kl/ref": 0.001,
            "grad_norm": 1.5, "time/iteration": 2.0}


def test_describe_metric_matches_patterns():
    assert describe_metric("reward/empathy") == METRIC_DOCS["reward/<component>"]
    assert describe_metric("episode/end_reasons/max_turns") == \
        METRIC_DOCS["episode/end_reasons/<reason>"]
    assert describe_metric("reward/std") == METRIC_DOCS["reward/std"]
    assert describe_metric("not/a/metric") is None
    assert set(METRIC_CONDITIONS) <= set(METRIC_DOCS)


def test_reductions_keep_extremes_and_count_counts():
    assert reduce_metric("ratio/min", [0.9, 1.2, 0.7]) == 0.7
    assert reduce_metric("ratio/max", [0.9, 1.2, 0.7]) == 1.2
    assert reduce_metric("tokens/trained", [10, 32, 5]) == 47
    assert reduce_metric("ratio/mean", [1.0, 2.0], weights=[3, 1]) == 1.25
    assert reduce_metric("grad_norm", [1.0, 2.0]) == 1.5


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """Two iterations of the tiny model with every setting that adds keys: a task sequence with replay
    and LwF (second task), kl_beta > 0, evaluation, π_old recomputed (mismatch and importance-weight
    keys), the task's own (component) reward; the console prints every second iteration (log_every=2).
    Keys logged only with a vLLM server are checked by tests/test_vllm_training.py."""
    from test_trainer import tiny_config

    from stateset_agents.training.trainer import GSPOTrainer

    config = tiny_config(tmp_path_factory.mktemp("keys"), task="customer_service,sales", num_outer_iterations=2,
                         continual_strategy="replay_lwf", replay_ratio=0.5, kl_beta=0.1, eval_every=2,
                         eval_scenarios=1, save_every=0, gradient_accumulation_steps=2, log_every=2,
                         report_to=["console", "jsonl"], recompute_old_logprobs=True)
    import contextlib
    import io

    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        GSPOTrainer(config, log=lambda _: None).train()
    records, _ = split_events(read_metrics(config.output_dir))
    return records, console.getvalue()


def _documented_pattern(key: str) -> str:
    return next(pattern for pattern in METRIC_DOCS if describe_metric(key) == METRIC_DOCS[pattern])


def test_every_logged_key_is_documented_and_every_documented_key_is_logged(real_run):
    records, _ = real_run
    logged = {key for record in records for key in record}
    undocumented = sorted(key for key in logged if describe_metric(key) is None)
    assert not undocumented, f"logged but not in METRIC_DOCS: {undocumented}"
    covered = {_documented_pattern(key) for key in logged}
    # keys of vLLM runs and of LLM customer / judge runs: checked by test_vllm_training.py, test_llm_user_training.py
    vllm_only = {key for key, condition in METRIC_CONDITIONS.items() if condition in ("use_vllm", *LLM_CONDITIONS)}
    assert set(METRIC_DOCS) - covered - vllm_only == set(), "documented but never logged"
    # a key missing from some iteration must say when it is logged
    for record in records:
        for pattern in set(METRIC_DOCS) - {_documented_pattern(key) for key in record}:
            assert pattern in METRIC_CONDITIONS, f"{pattern} is missing from iteration {record['iteration']}"


def test_logged_counts_are_counts_and_loss_terms_add_up(real_run):
    (first, second), console = real_run
    # no replay in the first iteration: every sampled token is trained once, in one of its optimizer steps
    assert first["tokens/trained"] == first["tokens/completion"] and first["episodes/trained"] == 4
    assert second["episodes/trained"] == 8  # 4 fresh + 4 replayed (replay_ratio 0.5)
    for record in (first, second):
        assert record["ratio/min"] <= record["ratio/mean"] <= record["ratio/max"]
    parts = second["loss/policy"] + second["loss/kl_ref"] + second["loss/kl_teacher"]
    assert second["loss/total"] == pytest.approx(parts, rel=1e-5, abs=1e-7)
    # log_every=2: the console got iteration 2's line only; metrics.jsonl has both
    assert "iter 2/2" in console and "iter 1/2" not in console


def test_log_every_thins_the_console_but_not_the_jsonl(tmp_path, capsys):
    with MetricsLogger(tmp_path, report_to=["console", "jsonl"], total_iterations=5, console_every=2) as logger:
        for iteration in range(1, 6):
            logger.log(_metrics(iteration))
    out = capsys.readouterr().out
    assert [f"iter {i}/5" in out for i in range(1, 6)] == [False, True, False, True, True]  # and the last
    assert [r["iteration"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="console_every"):
        MetricsLogger(tmp_path, report_to="none", console_every=0)


def test_jsonl_written_and_appended_across_loggers(tmp_path):
    with MetricsLogger(tmp_path, report_to=["jsonl"]) as logger:
        logger.log(_metrics(1))
        logger.log(_metrics(2))
    # The file is flushed line by line: readable before close.
    second = MetricsLogger(tmp_path, report_to=["jsonl"])
    second.log_event("resumed from checkpoint iter_000002")
    second.log(_metrics(3))
    assert [r.get("iteration") for r in read_metrics(tmp_path)] == [1, 2, None, 3]
    second.close()
    second.close()  # idempotent

    records = read_metrics(tmp_path / "metrics.jsonl")
    metrics, events = split_events(records)
    assert [m["iteration"] for m in metrics] == [1, 2, 3]
    assert metrics[2] == _metrics(3)
    assert events[0]["event"] == "resumed from checkpoint iter_000002"
    assert events[0]["iteration"] is None  # the second logger had not logged an iteration yet


def test_numpy_and_torch_scalars_are_stored_as_numbers(tmp_path):
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    with MetricsLogger(tmp_path, report_to="jsonl") as logger:
        logger.log({"iteration": 1, "reward/mean": np.float32(0.5), "grad_norm": torch.tensor(2.0),
                    "loss/policy": float("nan")})
    (record,) = read_metrics(tmp_path)
    assert record["reward/mean"] == 0.5 and record["grad_norm"] == 2.0
    assert record["loss/policy"] != record["loss/policy"]  # NaN survives the round trip


def test_truncated_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n{"iteration": 2}\n{"iterat')
    assert read_metrics(path) == [{"iteration": 1}, {"iteration": 2}]
    path.write_text('{"iteration": 1}\n{"iterat\n{"iteration": 3}\n')
    with pytest.raises(ValueError, match=":2:"):
        read_metrics(path)


def test_console_sink_without_tty(tmp_path, capsys):
    assert not sys.stdout.isatty()
    with MetricsLogger(tmp_path, report_to=["console"], total_iterations=3) as logger:
        logger.log_event("task boundary: customer_service -> sales")
        for iteration in (1, 2, 3):
            logger.log(_metrics(iteration))
        logger.log({"iteration": 3, "eval/reward_mean": 0.75})
    out = capsys.readouterr().out
    assert "task boundary: customer_service -> sales" in out
    assert "iter 2/3 | customer_service | reward 0.500±0.125 | success 50%" in out
    assert "clip 0.000/0.062" in out and "eval 0.750" in out
    assert not (tmp_path / "metrics.jsonl").exists()


def test_console_line_only_shows_present_keys():
    assert format_console_line({"iteration": 4}) == "iter 4"
    assert format_console_line({"reward/mean": float("nan")}) == "reward nan"
    assert format_console_line({"entropy": 0.0912, "eval/reward_mean": 0.8, "eval/success_rate": 0.6667}) == (
        "entropy 0.091 | eval 0.800 | eval success 67%")


def test_unknown_sink_and_closed_logger(tmp_path):
    with pytest.raises(ValueError, match="tensorboard"):
        MetricsLogger(tmp_path, report_to=["tensorboard"])
    logger = MetricsLogger(tmp_path, report_to="none")
    logger.close()
    with pytest.raises(RuntimeError, match="closed"):
        logger.log({"iteration": 1})


def test_missing_wandb_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(ImportError, match="pip install wandb"):
        MetricsLogger(tmp_path, report_to=["jsonl", "wandb"])


def _wandb_history(run_file: Path) -> list[dict]:
    """Decode the history records of a .wandb file (leveldb log format of protobuf Records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, chunks, history = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too small for a header: padding up to the next block
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record is assembled
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            if record.WhichOneof("record_type") == "history":
                history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.history.item})
    return history


def test_wandb_offline_run_records_logged_values(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    with MetricsLogger(out, report_to=["jsonl", "wandb"], wandb_project="stateset-test",
                       wandb_run_name="offline-check", config={"learning_rate": 1e-5}) as logger:
        logger.log(_metrics(1))
        logger.log(_metrics(2))
    run_dirs = list((out / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1, list(out.rglob("*"))
    (run_file,) = run_dirs[0].glob("run-*.wandb")
    # run.finish() returns once the W&B service has the records; on a cold first start the file's
    # last block can reach the disk a moment later, so poll briefly instead of failing at once.
    deadline, history = time.monotonic() + 30, _wandb_history(run_file)
    while len(history) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        history = _wandb_history(run_file)
    assert [h["_step"] for h in history] == [1, 2]
    assert [h["reward/mean"] for h in history] == [0.25, 0.5]
    assert history[1]["clip/high_fraction"] == 0.0625 and history[1]["task"] == "customer_service"
    assert len(read_metrics(out)) == 2


def test_truncate_metrics_keeps_each_iteration_once(tmp_path):
    from stateset_agents.runs.metrics import truncate_metrics

    with MetricsLogger(tmp_path, report_to=["jsonl"]) as logger:
        for iteration in (1, 2, 3):
            logger.log(_metrics(iteration))
        logger.log_event("task boundary: customer_service -> sales")  # comes with iteration 4
    path = tmp_path / "metrics.jsonl"
    path.write_text(path.read_text() + '{"iteration": 4, "rew')  # killed mid-line
    assert truncate_metrics(tmp_path, 2) == 2  # iteration 3 and the event; the torn line goes too
    assert path.read_text().endswith("\n") and [r["iteration"] for r in read_metrics(path)] == [1, 2]
    before = path.stat().st_mtime_ns
    assert truncate_metrics(tmp_path, 2) == 0 and path.stat().st_mtime_ns == before  # consistent: untouched
    with MetricsLogger(tmp_path, report_to=["jsonl"], start_iteration=2) as logger:
        logger.log_event("resumed")
    assert read_metrics(path)[-1]["iteration"] == 2
    assert truncate_metrics(tmp_path, 0) == 3 and read_metrics(path) == []  # no checkpoint: all go
    assert truncate_metrics(tmp_path / "absent", 0) == 0
