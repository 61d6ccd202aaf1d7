"""AgentConfig as the guide writes it, validation naming the field, batched generation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stateset_agents.core.agent import AgentConfig


def test_guide_snippet_runs_unchanged():
    agent_config = AgentConfig(
        model_name="moonshotai/Kimi-K2.5",
        system_prompt="You are Kimi, an AI assistant created by Moonshot AI.",
        # Enable thinking mode via chat template kwargs
        model_kwargs={
            "chat_template_kwargs": {"thinking": True}
        },
        max_new_tokens=4096
    )
    assert agent_config.thinking and agent_config.effective_temperature == 1.0


def test_kimi_temperature_advice_without_thinking():
    config = AgentConfig(model_name="x", model_kwargs={"chat_template_kwargs": {"thinking": False}})
    assert config.effective_temperature == 0.6


@pytest.mark.parametrize("field,value", [("max_new_tokens", 0), ("max_new_tokens", -5), ("system_prompt", 42),
                                         ("top_p", 0.0), ("temperature", -1.0)])
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValidationError) as error:
        AgentConfig(model_name="x", **{field: value})
    assert field in str(error.value)


def test_unknown_model_kwargs_are_rejected():
    with pytest.raises(ValidationError, match="unknown model_kwargs"):
        AgentConfig(model_name="x", model_kwargs={"chat_template_kwarg": {}})


def test_batch_generation_returns_one_turn_per_conversation(tiny_agent):
    conversations = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Where is order A12?"}]]
    turns = tiny_agent.generate(conversations)
    assert len(turns) == 2
    for turn, conversation in zip(turns, conversations):
        rendered = tiny_agent.tokenizer.decode(turn.prompt_ids)
        assert rendered.startswith("<|im_system|>system<|im_middle|>You are a support agent.<|im_end|>")
        assert rendered.endswith("<|im_assistant|>assistant<|im_middle|><think>")
        assert conversation[0]["content"] in rendered


def test_invalid_message_names_its_index(tiny_agent):
    from stateset_agents.core.messages import MessageValidationError

    with pytest.raises(MessageValidationError, match="message 1"):
        tiny_agent.generate([[{"role": "user", "content": "hi"}, {"role": "wizard", "content": "x"}]])
