"""The embedded tiny Kimi-K2.5: a real HF model directory, reproducible, Kimi's tokens and template."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import load_file

from stateset_agents.core.formats import KimiChatFormat
from stateset_agents.embedded import build_base
from stateset_agents.models.tiny_kimi import TinyKimiSpec


def weights_digest(directory) -> str:
    tensors = load_file(str(directory / "model.safetensors"))
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].numpy().tobytes())
    return digest.hexdigest()


def test_loads_with_plain_from_pretrained(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoTokenizer, Kimi_K25ForConditionalGeneration

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert isinstance(model, Kimi_K25ForConditionalGeneration)
    text = model.config.text_config
    assert text.model_type == "deepseek_v3" and text.first_k_dense_replace == 1
    assert text.n_routed_experts == 8 and text.num_experts_per_tok == 2 and text.n_shared_experts == 1
    names = {name for name, _ in model.named_modules()}
    assert any(n.endswith("self_attn.kv_a_proj_with_mqa") for n in names)
    assert any(n.endswith("mlp.shared_experts.gate_proj") for n in names)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.chat_template


def test_special_tokens_are_single_ids(tiny_loaded):
    tokenizer = tiny_loaded.tokenizer
    for token in KimiChatFormat.special_tokens:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token


@pytest.mark.parametrize("text, copied", [
    ("It is item T916.", ["T", "9", "1", "6"]),
    ('{"sku": "T916", "price": 1619}', ["T", "9", "1", "6", "1", "6", "1", "9"]),
    ("Can you help me pick a tablet?", ["tablet"]),
    ('{"category": "laptop", "max_price": 550}', ["laptop", "5", "5", "0"]),
    ("My order A1234 is late and I live in the east.", ["A", "1", "2", "3", "4", "east"]),
])
def test_what_the_agent_copies_is_never_fused_with_its_neighbours(tiny_loaded, text, copied):
    tokenizer = tiny_loaded.tokenizer
    pieces = [tokenizer.decode([i]) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert "".join(pieces) == text
    found = [piece for piece in pieces if piece in copied]
    assert found == copied, pieces


def test_tool_argument_words_come_from_the_tasks():
    from stateset_agents.embedded.tokenizer_corpus import tool_argument_words

    words = tool_argument_words()
    assert {"laptop", "tablet", "billing", "hardware"} <= set(words)
    assert all(word.isalpha() and word.islower() for word in words)


def test_tokenizer_template_matches_the_python_renderer(tiny_loaded):
    tokenizer = tiny_loaded.tokenizer
    messages = [{"role": "user", "content": "Where is my order A1234?"},
                {"role": "assistant", "content": "Let me check.", "reasoning_content": "Need the order."},
                {"role": "user", "content": "Thanks"}]
    for thinking in (True, False):
        expected = KimiChatFormat().render(messages, thinking=thinking)
        assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             thinking=thinking) == expected


def test_build_is_reproducible_from_the_seed(tmp_path, tiny_model_dir):
    rebuilt = build_base(tmp_path / "again")
    assert weights_digest(rebuilt) == weights_digest(tiny_model_dir)
    assert (rebuilt / "tokenizer.json").read_text() == (tiny_model_dir / "tokenizer.json").read_text()


def test_different_seed_gives_different_weights(tmp_path, tiny_model_dir):
    other = build_base(tmp_path / "other", TinyKimiSpec(seed=1))
    assert weights_digest(other) != weights_digest(tiny_model_dir)


def test_generates_a_kimi_turn_that_stops_at_end_of_turn(tiny_agent):
    torch.manual_seed(0)
    turns = tiny_agent.generate([[{"role": "user", "content": "Hello"}]] * 3, max_new_tokens=40)
    end = tiny_agent.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for turn in turns:
        assert len(turn.completion_ids) == len(turn.logprobs) <= 40
        if end in turn.completion_ids:
            assert turn.completion_ids.index(end) == len(turn.completion_ids) - 1
            assert turn.parsed.terminated
        else:
            assert not turn.parsed.terminated


def test_embedded_name_resolves_through_the_cache(tiny_model_dir, monkeypatch):
    from stateset_agents.models.loading import resolve_model_path

    assert resolve_model_path("tiny-kimi-k2.5-base") == str(tiny_model_dir)


@pytest.mark.parametrize("name", ["moonshotai/Kimi-K2.5", "someone/unknown-model"])
def test_uncached_hub_model_offline_gives_one_clear_error(name, monkeypatch, tmp_path):
    from stateset_agents.models.loading import ModelNotAvailableError, resolve_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotAvailableError) as error:
        resolve_model_path(name)
    message = str(error.value)
    assert name in message and "not in the local cache" in message and "tiny-kimi-k2.5" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_nonsense_model_name_is_explained():
    from stateset_agents.models.loading import ModelNotAvailableError, resolve_model_path

    with pytest.raises(ModelNotAvailableError, match="neither an embedded model"):
        resolve_model_path("not-a-model")
