"""Checkpoints: exact resume with a real LoRA model, crash safety, pruning, plain models."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from stateset_agents.runs.checkpoints import (  # noqa: E402
    COMPLETE_MARKER,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

VOCAB = 100


def _tiny_llama(tie: bool = False) -> transformers.LlamaForCausalLM:
    """The same base weights every call (in real use they come from the hub checkpoint)."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=tie)
    return transformers.LlamaForCausalLM(config)


def _setup(lora_seed: int):
    """LoRA model + AdamW + warmup/linear-decay LambdaLR; `lora_seed` sets the adapter init."""
    base = _tiny_llama()
    torch.manual_seed(lora_seed)
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"])
    model = peft.get_peft_model(base, config)
    model.train()  # LoRA dropout draws from the torch RNG: resuming must restore it
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 3)
                                                  * max(0.0, 1 - step / 10))
    return model, optimizer, scheduler


def _train_steps(model, optimizer, scheduler, steps: int) -> None:
    """Steps whose data come from the Python, NumPy and torch RNGs."""
    for _ in range(steps):
        length = random.randint(4, 8)
        batch = 1 + int(np.random.randint(0, 2))
        ids = torch.randint(0, VOCAB, (batch, length))
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()


def _lora_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def test_resume_reproduces_training_exactly(tmp_path):
    model, optimizer, scheduler = _setup(lora_seed=1)
    _seed_all(7)
    _train_steps(model, optimizer, scheduler, 2)
    path = save_checkpoint(tmp_path, 2, model, optimizer, scheduler,
                           {"sampler": {"position": 5}, "history": [0.1, 0.2]})
    _train_steps(model, optimizer, scheduler, 2)
    expected = _lora_weights(model)

    fresh_model, fresh_optimizer, fresh_scheduler = _setup(lora_seed=2)  # different adapter init
    _seed_all(99)  # different RNG state: the checkpoint must restore it
    assert not all(torch.equal(expected[n], p) for n, p in _lora_weights(fresh_model).items())
    state = load_checkpoint(path, fresh_model, fresh_optimizer, fresh_scheduler)
    assert state == {"iteration": 2, "sampler": {"position": 5}, "history": [0.1, 0.2]}
    assert fresh_scheduler.last_epoch == 2
    _train_steps(fresh_model, fresh_optimizer, fresh_scheduler, 2)

    resumed = _lora_weights(fresh_model)
    assert resumed.keys() == expected.keys() and len(resumed) == 8  # 2 layers x q,v x A,B
    for name, tensor in expected.items():
        assert torch.equal(resumed[name], tensor), name


def test_checkpoint_layout_and_peft_format(tmp_path):
    model, optimizer, scheduler = _setup(lora_seed=1)
    extra = {"replay_buffer.jsonl": lambda p: p.write_text('{"x": 1}\n')}
    path = save_checkpoint(tmp_path, 3, model, optimizer, scheduler, {}, extra_files=extra)
    assert path == tmp_path / "checkpoints" / "iter_000003"
    names = sorted(p.name for p in path.iterdir())
    assert names == sorted(["adapter", "optimizer.pt", "scheduler.pt", "rng.pt",
                            "trainer_state.json", "replay_buffer.jsonl", COMPLETE_MARKER])
    assert json.loads((path / "trainer_state.json").read_text()) == {"iteration": 3}
    # A standard PEFT adapter directory: loadable by PeftModel.from_pretrained.
    assert (path / "adapter" / "adapter_config.json").is_file()
    reloaded = peft.PeftModel.from_pretrained(_tiny_llama(), str(path / "adapter"))
    for name, tensor in _lora_weights(model).items():
        assert torch.equal(dict(reloaded.named_parameters())[name], tensor)


def _raise(_path):
    raise RuntimeError("disk full while writing the replay buffer")


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer, scheduler = _setup(lora_seed=1)
    good = save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {"marker": "good"})
    saved = _lora_weights(model)
    _train_steps(model, optimizer, scheduler, 1)

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(tmp_path, 2, model, optimizer, scheduler, {}, extra_files={"buf": _raise})
    real_replace = os.replace

    def failing_replace(src, dst):
        if ".tmp-" in str(src):
            raise OSError("simulated crash before the rename")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(tmp_path, 3, model, optimizer, scheduler, {})
    monkeypatch.undo()

    # A hard crash (no cleanup) leaves a temp dir and, worst case, an unmarked iter_ directory.
    root = tmp_path / "checkpoints"
    (root / ".tmp-iter_000004-deadbeef").mkdir()
    (root / ".tmp-iter_000004-deadbeef" / COMPLETE_MARKER).write_text("{}")
    (root / "iter_000005").mkdir()
    assert sorted(p.name for p in root.iterdir()) == [
        ".tmp-iter_000004-deadbeef", "iter_000001", "iter_000005"]
    assert latest_checkpoint(tmp_path) == good

    fresh, fresh_optimizer, fresh_scheduler = _setup(lora_seed=3)
    assert load_checkpoint(good, fresh, fresh_optimizer, fresh_scheduler)["marker"] == "good"
    for name, tensor in _lora_weights(fresh).items():
        assert torch.equal(tensor, saved[name])
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        load_checkpoint(root / "iter_000005", fresh)

    save_checkpoint(tmp_path, 6, model, optimizer, scheduler, {})  # cleans stale temporaries
    assert not list(root.glob(".tmp-*"))


def test_keep_last_prunes_oldest_and_resave_replaces(tmp_path):
    model, optimizer, scheduler = _setup(lora_seed=1)
    for iteration in range(1, 5):
        save_checkpoint(tmp_path, iteration, model, None, None, {}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["iter_000003", "iter_000004"]
    save_checkpoint(tmp_path, 4, model, None, None, {"again": True}, keep_last=2)
    state = json.loads((checkpoint_dir(tmp_path, 4) / "trainer_state.json").read_text())
    assert state == {"iteration": 4, "again": True}
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "iter_000003", "iter_000004"]
    with pytest.raises(FileNotFoundError, match="optimizer.pt"):
        load_checkpoint(checkpoint_dir(tmp_path, 4), model, optimizer)
    with pytest.raises(ValueError, match="keep_last"):
        save_checkpoint(tmp_path, 5, model, None, None, {}, keep_last=0)
    with pytest.raises(ValueError, match="plain file name"):
        save_checkpoint(tmp_path, 5, model, None, None, {}, extra_files={"rng.pt": _raise})
    with pytest.raises(TypeError, match="JSON-serialisable"):
        save_checkpoint(tmp_path, 5, model, None, None, {"bad": object()})
    assert latest_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 4)


def test_second_adapter_round_trips(tmp_path):
    model, _, _ = _setup(lora_seed=1)
    model.add_adapter("teacher", peft.LoraConfig(r=2, target_modules=["q_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".teacher." in name:
                param.add_(1.0)
    saved = _lora_weights(model)
    path = save_checkpoint(tmp_path, 1, model, None, None, {})

    fresh, _, _ = _setup(lora_seed=5)
    with pytest.raises(ValueError, match="teacher"):
        load_checkpoint(path, fresh, restore_rng=False)
    fresh.add_adapter("teacher", peft.LoraConfig(r=2, target_modules=["q_proj"]))
    load_checkpoint(path, fresh, restore_rng=False)
    for name, tensor in _lora_weights(fresh).items():
        assert torch.equal(tensor, saved[name]), name


@pytest.mark.parametrize("tie", [False, True])
def test_plain_model_round_trips(tmp_path, tie):
    model = _tiny_llama(tie=tie)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = save_checkpoint(tmp_path, 1, model, optimizer, None, {})
    assert (path / "model" / "model.safetensors").is_file()
    expected = {n: p.detach().clone() for n, p in model.state_dict().items()}
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(0.5)
    load_checkpoint(path, model, optimizer)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tie
