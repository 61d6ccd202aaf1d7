"""The warm-started weights shipped in the package: reproducible builds, the checks at load, and that
the shipped copy belongs to this checkout's code."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial

import pytest
import torch

from stateset_agents.embedded import shipped
from stateset_agents.training.warm_start import (LATE_PASSES, RESUME_POINTS, PracticePass, WarmStartSettings,
                                                 build_warm_started, prepare_warm_start, warm_start_inputs_digest)

MINI = WarmStartSettings(dialogues_per_task=2, copy_drills=64, copy_drill_batch_rows=32, batch_rows=8,
                         practice=PracticePass(dialogues_per_task=2),
                         habit=PracticePass(dialogues_per_task=2, oracle_fraction=0.5, mediocre_fraction=0.0,
                                            deflecting_fraction=0.5, tasks=("customer_service",)),
                         rehearsal=PracticePass(dialogues_per_task=1, oracle_fraction=0.5, mediocre_fraction=0.0,
                                                deflecting_fraction=0.5))


@pytest.fixture(scope="module", autouse=True)
def builds_at_this_processs_thread_count():
    """The mini builds train at this process's torch thread count instead of the shipped build's pinned
    `BUILD_THREADS` (2): under `make test`'s two xdist workers (one thread each), two threads in one worker
    spin against the other worker and a build takes 20x longer. Each comparison builds both sides here.
    (Patched rather than a `threads` argument of `build_warm_started`: its code is part of the warm start's
    inputs digest, so editing it would make the shipped copy stale.)"""
    from stateset_agents.training import warm_start

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(warm_start, "pinned_threads", partial(warm_start.pinned_threads, torch.get_num_threads()))
        yield


@pytest.fixture(scope="module")
def mini_builds(tiny_model_dir, tmp_path_factory):
    """Two independent mini warm starts of the test base model with the same settings."""
    root = tmp_path_factory.mktemp("mini-builds")
    return [build_warm_started(tiny_model_dir, root / name, MINI, log=lambda message: None) for name in ("a", "b")]


def test_a_warm_start_is_rebuilt_bit_for_bit(mini_builds):
    first, second = mini_builds
    assert shipped.compare_model_directories(first, second) == []
    reports = [json.loads((path / "warm_start.json").read_text()) for path in mini_builds]
    assert reports[0]["inputs_digest"] == reports[1]["inputs_digest"]


@pytest.mark.parametrize("resume_after", RESUME_POINTS)
def test_the_later_stages_on_an_earlier_model_are_a_full_build(resume_after, mini_builds, tiny_model_dir, tmp_path):
    """The maintainers' shortcut (`resume_after`) gives what a build from nothing gives, bit for bit."""
    quiet = lambda message: None  # noqa: E731
    later = LATE_PASSES[RESUME_POINTS.index(resume_after):]
    earlier = build_warm_started(tiny_model_dir, tmp_path / "earlier",
                                 replace(MINI, **{name: PracticePass(0) for name in later}), log=quiet)
    assert shipped.compare_model_directories(earlier, mini_builds[0])  # the later stages changed weights
    resumed = build_warm_started(tiny_model_dir, tmp_path / "resumed", MINI, log=quiet, resume_after=resume_after,
                                 resume_from=earlier)
    assert shipped.compare_model_directories(mini_builds[0], resumed) == []
    report = json.loads((resumed / "warm_start.json").read_text())
    assert report["inputs_digest"] == json.loads((mini_builds[0] / "warm_start.json").read_text())["inputs_digest"]
    assert report["resumed_after"] == resume_after and all(report[f"{name}_losses"] for name in later)
    assert not any(report[f"{name}_losses"] for name in LATE_PASSES if name not in later)


def test_resuming_takes_a_stage_and_a_directory(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="together"):
        build_warm_started(tiny_model_dir, tmp_path / "x", MINI, resume_after="practice")
    with pytest.raises(ValueError, match="must be one of"):
        build_warm_started(tiny_model_dir, tmp_path / "x", MINI, resume_after="rehearsal", resume_from=tmp_path)


def test_comparison_finds_a_single_flipped_bit(mini_builds, tmp_path):
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "copy"
    copy.mkdir()
    for path in mini_builds[0].iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    tensors = load_file(copy / "model.safetensors")
    name = sorted(tensors)[0]
    bits = tensors[name].contiguous().view(-1).view(torch.int32).clone()
    bits[0] ^= 1  # the lowest mantissa bit of one weight
    tensors[name] = bits.view(torch.float32).view_as(tensors[name])
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    problems = shipped.compare_model_directories(mini_builds[0], copy)
    assert len(problems) == 1 and name in problems[0]


def test_the_inputs_digest_follows_what_the_build_trains_on(tiny_model_dir):
    inputs = prepare_warm_start(tiny_model_dir, MINI)
    digest = warm_start_inputs_digest(inputs, MINI)
    assert digest == warm_start_inputs_digest(prepare_warm_start(tiny_model_dir, MINI), MINI)
    other = replace(MINI, oracle_fraction=0.5)
    assert warm_start_inputs_digest(prepare_warm_start(tiny_model_dir, other), other) != digest
    other = replace(MINI, practice=replace(MINI.practice, oracle_fraction=0.0, mediocre_fraction=0.0,
                                           deflecting_fraction=1.0))
    assert warm_start_inputs_digest(prepare_warm_start(tiny_model_dir, other), other) != digest
    other = replace(MINI, habit=replace(MINI.habit, oracle_fraction=0.0, deflecting_fraction=1.0))
    assert warm_start_inputs_digest(prepare_warm_start(tiny_model_dir, other), other) != digest
    other = replace(MINI, rehearsal=replace(MINI.rehearsal, tasks=("sales",)))
    assert warm_start_inputs_digest(prepare_warm_start(tiny_model_dir, other), other) != digest
    prompt, completion = inputs.examples[0]
    inputs.examples[0] = (prompt, completion[:-1])  # one token less to learn
    assert warm_start_inputs_digest(inputs, MINI) != digest


def test_a_shipped_copy_is_used_only_when_current_and_intact(mini_builds, tmp_path, monkeypatch):
    monkeypatch.delenv(shipped.NO_SHIPPED_ENV, raising=False)
    messages: list[str] = []
    shipped.write_shipped_copy("mini", mini_builds[0], "fingerprint-1", root=tmp_path,
                               extra={"inputs_digest": "inputs-1"})
    use = lambda fingerprint, **kw: shipped.usable_shipped_copy("mini", fingerprint, root=tmp_path,  # noqa: E731
                                                                log=messages.append, **kw)
    assert use("fingerprint-1") == tmp_path / "mini"
    assert use("fingerprint-2") is None and "built here instead" in messages[-1]
    assert use("fingerprint-2", inputs_digest=lambda: "inputs-1") == tmp_path / "mini"
    assert use("fingerprint-2", inputs_digest=lambda: "inputs-2") is None
    monkeypatch.setenv(shipped.NO_SHIPPED_ENV, "1")
    assert use("fingerprint-1") is None
    monkeypatch.delenv(shipped.NO_SHIPPED_ENV)
    weights = tmp_path / "mini" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    assert use("fingerprint-1") is None and "damaged" in messages[-1]
    assert shipped.usable_shipped_copy("absent", "fingerprint-1", root=tmp_path, log=messages.append) is None


def test_ensure_embedded_model_installs_a_current_shipped_copy(mini_builds, tmp_path, monkeypatch):
    from stateset_agents import embedded

    fingerprint = "mini-fingerprint"
    built: list[str] = []
    entry = embedded.EmbeddedModel("mini-shipped", "test model", lambda: fingerprint,
                                   lambda directory: built.append(str(directory)))
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "mini-shipped", entry)
    monkeypatch.setattr(shipped, "SHIPPED_ROOT", tmp_path / "shipped")
    monkeypatch.setenv(embedded.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(shipped.NO_SHIPPED_ENV, raising=False)
    shipped.write_shipped_copy("mini-shipped", mini_builds[0], fingerprint)
    installed = embedded.ensure_embedded_model("mini-shipped", log=lambda message: None)
    assert built == [] and installed == tmp_path / "cache" / "models" / "mini-shipped"
    assert shipped.compare_model_directories(mini_builds[0], installed) == []
    assert json.loads((installed / embedded.BUILD_INFO).read_text())["shipped"] is True


def test_the_packaged_tiny_kimi_belongs_to_this_code():
    """The shipped tiny-kimi-k2.5 carries this checkout's fingerprint, so a fresh install uses it at once
    (else `make demo` first checks the build's inputs for ~2 minutes, or rebuilds for half an hour).
    Fails after a change to the warm start's code, settings or data, or to code the fingerprint covers:
    run `stateset-agents build-tiny-model --restamp` (the inputs are unchanged) or `--ship`, and commit."""
    from stateset_agents import embedded

    manifest_path = shipped.shipped_directory("tiny-kimi-k2.5") / shipped.MANIFEST
    assert manifest_path.exists(), "no shipped tiny-kimi-k2.5: run `stateset-agents build-tiny-model --ship`"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["fingerprint"] == embedded.EMBEDDED_MODELS["tiny-kimi-k2.5"].fingerprint(), (
        "the shipped tiny-kimi-k2.5 carries another checkout's fingerprint: run `stateset-agents build-tiny-model "
        "--restamp` (keeps it when the build's inputs are unchanged, else says to rebuild with --ship) and commit")


def test_restamp_records_the_fingerprint_only_when_the_inputs_are_unchanged(mini_builds, tmp_path, monkeypatch):
    from stateset_agents import embedded

    current = {"fingerprint": "code-2", "inputs": "inputs-1"}
    entry = embedded.EmbeddedModel("mini-restamp", "test model", lambda: current["fingerprint"],
                                   lambda directory: None, lambda: current["inputs"])
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "mini-restamp", entry)
    monkeypatch.delenv(shipped.NO_SHIPPED_ENV, raising=False)
    shipped.write_shipped_copy("mini-restamp", mini_builds[0], "code-1", root=tmp_path,
                               extra={"inputs_digest": "inputs-1"})
    manifest = tmp_path / "mini-restamp" / shipped.MANIFEST
    before = json.loads(manifest.read_text())
    messages: list[str] = []
    assert shipped.restamp("mini-restamp", root=tmp_path, log=messages.append)
    after = json.loads(manifest.read_text())
    assert after == {**before, "fingerprint": "code-2"} and "now carries" in messages[-1]
    assert shipped.usable_shipped_copy("mini-restamp", "code-2", root=tmp_path, log=messages.append) is not None
    current.update(fingerprint="code-3", inputs="inputs-2")  # the build would train on something else
    assert not shipped.restamp("mini-restamp", root=tmp_path, log=messages.append)
    assert "stale" in messages[-1] and json.loads(manifest.read_text()) == after
    assert not shipped.restamp("mini-restamp", root=tmp_path / "elsewhere", log=messages.append)


def test_how_a_tokenizer_was_loaded_is_not_a_difference(mini_builds, tmp_path):
    """transformers records `local_files_only` (HF_HUB_OFFLINE at build time) in tokenizer_config.json."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in mini_builds[0].iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    config_path = copy / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["local_files_only"] = not config.get("local_files_only", False)
    config_path.write_text(json.dumps(config))
    assert shipped.compare_model_directories(mini_builds[0], copy) == []
    config["model_max_length"] = 7
    config_path.write_text(json.dumps(config))
    assert shipped.compare_model_directories(mini_builds[0], copy) == ["tokenizer_config.json: contents differ"]


def test_resuming_a_warm_start_is_only_for_shipping(tmp_path):
    from stateset_agents.cli import main

    with pytest.raises(SystemExit, match="goes with --ship"):
        main(["build-tiny-model", "--resume-after", "practice", str(tmp_path)])
    with pytest.raises(SystemExit, match="must be one of"):
        main(["build-tiny-model", "--ship", "--resume-after", "drills", str(tmp_path)])
    with pytest.raises(ValueError, match="tiny-kimi-k2.5's warm start"):
        shipped._later_stages_only("tiny-kimi-k2.5-base", print, "practice", tmp_path)
