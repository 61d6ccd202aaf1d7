"""AgentConfig as the guide writes it, validation naming the field, batched generation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stateset_agents.rollout.agent import AgentConfig


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


# ------------------------------------------------------------------------ prompt-length guard

def test_prompt_limit_defaults_to_the_model_length_minus_new_tokens(tiny_agent):
    assert tiny_agent.prompt_token_limit() == 262144 - tiny_agent.config.max_new_tokens
    assert tiny_agent.prompt_token_limit(max_new_tokens=100) == 262144 - 100
    tiny_agent.config.max_prompt_tokens = 300
    assert tiny_agent.prompt_token_limit() == 300


def test_training_config_passes_the_prompt_limit_to_the_agent():
    from stateset_agents.training.config import TrainingConfig
    from stateset_agents.training.trainer import agent_config_for

    assert agent_config_for(TrainingConfig(max_prompt_tokens=100)).max_prompt_tokens == 100
    assert agent_config_for(TrainingConfig()).max_prompt_tokens is None


def test_a_request_over_the_limit_is_a_clear_error(tiny_agent):
    from stateset_agents.rollout.agent import PromptTooLongError

    tiny_agent.config.max_prompt_tokens = 60
    short = [{"role": "user", "content": "hi"}]
    long = [{"role": "user", "content": "where is my order? " * 40}]
    length = len(tiny_agent.encode(long).input_ids)
    with pytest.raises(PromptTooLongError, match=rf"prompt 1 has {length} tokens, more than the limit of 60 "
                                                 r"\(max_prompt_tokens\); 1 of 2 prompts"):
        tiny_agent.generate([short, long])
    tiny_agent.config.max_prompt_tokens = None
    tiny_agent.config.max_new_tokens = 262144 - length + 1  # the model's own length is the default limit
    with pytest.raises(PromptTooLongError, match="max_position_embeddings 262144 minus max_new_tokens"):
        tiny_agent.generate([long])


@pytest.mark.parametrize("headroom,turns", [(-1, 0), (8, 1)])
def test_rollout_ends_episodes_at_the_context_limit(tiny_agent, headroom, turns):
    """Opening prompt over the limit: ended before sampling; just under it: one turn, then ended."""
    from stateset_agents.rollout.runner import EpisodeSpec, run_episodes
    from stateset_agents.tasks import get_task

    task = get_task("customer_service")
    scenarios = task.train_scenarios()[:1] * 2  # one group of two episodes
    opening = task.make_env(scenarios[0]).reset()
    tiny_agent.config.max_prompt_tokens = len(tiny_agent.encode(opening, task.tools.schemas()).input_ids) + headroom
    trajectories, stats = run_episodes(tiny_agent, [EpisodeSpec(task, s) for s in scenarios], max_turns=4)
    assert [t.end_reason for t in trajectories] == ["context_limit"] * 2
    assert [t.num_turns for t in trajectories] == [turns] * 2
    assert all(t.state["done"] and t.state["end_reason"] == "context_limit" for t in trajectories)
    assert stats.episodes == 2 and stats.generate_calls == turns
