"""The agent: a model, its chat format, and batched generation over conversations.

```python
from stateset_agents.rollout.agent import Agent, AgentConfig
agent = Agent(AgentConfig(model_name="tiny-kimi-k2.5", system_prompt="You are a support agent.",
                          model_kwargs={"chat_template_kwargs": {"thinking": True}}, max_new_tokens=64))
turns = agent.generate([conversation_a, conversation_b])   # one `generate` call for the batch
```

Each returned `TurnSample` holds the exact prompt ids, the sampled ids, their sampling
logprobs, and the parsed completion (reasoning / answer / tool calls).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stateset_agents.core.completion import ParsedCompletion
from stateset_agents.core.messages import validate_messages
from stateset_agents.core.formats import get_chat_format
from stateset_agents.core.trajectory import TurnSample
from stateset_agents.models.loading import LoadSettings, load_model
from stateset_agents.rollout.encoding import PromptEncoder
from stateset_agents.core.formats.kimi import kimi_temperature
from stateset_agents.rollout.hf_generation import HFGenerator, SamplingSettings

# from_pretrained-style keys accepted in `model_kwargs` (besides `chat_template_kwargs`)
LOAD_KEYS = ("dtype", "torch_dtype", "device", "attn_implementation", "load_in_4bit", "trust_remote_code")


class AgentConfig(BaseModel):
    """How an agent loads its model and samples. The guide's fields plus sampling settings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    model_name: str = Field(description="Embedded name (tiny-kimi-k2.5), local directory or hub id.")
    system_prompt: str | None = Field(
        default=None, description="Prepended as a system message when a conversation has none."
    )
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="`chat_template_kwargs` (e.g. {'thinking': False}) and load options: dtype, device, "
        "attn_implementation, load_in_4bit, trust_remote_code.",
    )
    max_new_tokens: int = Field(default=512, gt=0, description="Most tokens sampled per assistant turn.")
    temperature: float | None = Field(
        default=None, ge=0.0, description="Sampling temperature; None = Kimi's advice (1.0 thinking, 0.6 not)."
    )
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling; 1.0 = off.")
    top_k: int = Field(default=0, ge=0, description="Top-k sampling; 0 = off.")
    trust_remote_code: bool = Field(default=False, description="Run model code shipped with the checkpoint.")
    max_prompt_tokens: int | None = Field(
        default=None, ge=1, description="Most tokens a prompt may hold; None = the model's "
        "max_position_embeddings minus max_new_tokens. Rollouts end longer episodes (context_limit).",
    )

    @field_validator("system_prompt", mode="before")
    @classmethod
    def _system_prompt_is_text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError(f"system_prompt must be a string or None, got {type(value).__name__}")
        return value

    @field_validator("model_kwargs")
    @classmethod
    def _known_model_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = set(value) - {"chat_template_kwargs", *LOAD_KEYS}
        if unknown:
            raise ValueError(
                f"unknown model_kwargs {sorted(unknown)}; allowed: chat_template_kwargs, {', '.join(LOAD_KEYS)}"
            )
        if not isinstance(value.get("chat_template_kwargs", {}), dict):
            raise ValueError("model_kwargs['chat_template_kwargs'] must be a dict, e.g. {'thinking': True}")
        return value

    @property
    def chat_template_kwargs(self) -> dict[str, Any]:
        return dict(self.model_kwargs.get("chat_template_kwargs", {}))

    @property
    def thinking(self) -> bool:
        return bool(self.chat_template_kwargs.get("thinking", True))

    @property
    def effective_temperature(self) -> float:
        if self.temperature is not None:
            return self.temperature
        return kimi_temperature(self.thinking)


class PromptTooLongError(ValueError):
    """A generation request whose prompt is over the agent's prompt-token limit."""


class Agent:
    """Loads the model lazily on first use; `generate` samples a batch of conversations at once."""

    def __init__(self, config: AgentConfig, loaded=None):
        self.config = config
        self._loaded = loaded
        self._encoder = None
        self._generator = None
        self._backend = None  # another rollout backend (rollout/backend.py), e.g. a vLLM client

    # -- loading -------------------------------------------------------------------------
    def load(self) -> "Agent":
        if self._loaded is None:
            options = self.config.model_kwargs
            settings = LoadSettings(
                dtype=str(options.get("dtype", options.get("torch_dtype", "auto"))),
                device=str(options.get("device", "auto")),
                attn_implementation=options.get("attn_implementation"),
                load_in_4bit=bool(options.get("load_in_4bit", False)),
                trust_remote_code=self.config.trust_remote_code or bool(options.get("trust_remote_code", False)),
            )
            self._loaded = load_model(self.config.model_name, settings)
        return self

    @property
    def loaded(self):
        self.load()
        return self._loaded

    @property
    def model(self):
        return self.loaded.model

    @model.setter
    def model(self, model) -> None:  # e.g. the trainer wraps it with PEFT
        self.loaded.model = model
        self._generator = None

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def chat_format(self):
        return get_chat_format(self.tokenizer)

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = PromptEncoder(self.tokenizer, self.chat_format, self.loaded.image_settings)
        return self._encoder

    def use_backend(self, backend) -> None:
        """Sample with `backend` (a `RolloutBackend`) instead of transformers.generate on `model`."""
        self._backend = backend

    @property
    def generator(self):
        if self._backend is not None:
            return self._backend
        if self._generator is None:
            self._generator = HFGenerator(self.model, self.tokenizer.pad_token_id, self.stop_token_ids)
        return self._generator

    @property
    def stop_token_ids(self) -> list[int]:
        return [self.tokenizer.convert_tokens_to_ids(self.chat_format.end_of_turn_token)]

    def sampling(self, **overrides):
        values = dict(max_new_tokens=self.config.max_new_tokens, temperature=self.config.effective_temperature,
                      top_p=self.config.top_p, top_k=self.config.top_k)
        if self.encoder.image_pad_id is not None:  # the model may not invent an image
            values["suppress_token_ids"] = (self.encoder.image_pad_id,)
        values.update(overrides)
        return SamplingSettings(**values)

    def prompt_token_limit(self, max_new_tokens: int | None = None) -> int | None:
        """Most tokens a prompt may hold: `max_prompt_tokens`, else the model's maximum length
        minus the tokens to sample (None when the model states no maximum)."""
        if self.config.max_prompt_tokens is not None:
            return self.config.max_prompt_tokens
        positions = _max_positions(self.model)
        served = getattr(self._backend, "max_model_len", None)  # a server's own context limit, when smaller
        if served is not None:
            positions = served if positions is None else min(positions, served)
        return None if positions is None else positions - (max_new_tokens or self.config.max_new_tokens)

    def check_prompt_lengths(self, prompts: list, max_new_tokens: int | None = None) -> None:
        """Raise `PromptTooLongError` (naming the lengths and the setting) before anything is
        allocated for a prompt over the limit: a 300k-token prompt would need ~90 GB."""
        limit = self.prompt_token_limit(max_new_tokens)
        too_long = [(i, len(p.input_ids)) for i, p in enumerate(prompts) if limit is not None and len(p.input_ids) > limit]
        if not too_long:
            return
        index, length = too_long[0]
        if self.config.max_prompt_tokens is not None:
            source = "max_prompt_tokens"
        else:
            new = max_new_tokens or self.config.max_new_tokens
            source = (f"the model's max_position_embeddings {_max_positions(self.model)} minus max_new_tokens {new}; "
                      "set max_prompt_tokens to choose another limit")
        raise PromptTooLongError(
            f"prompt {index} has {length} tokens, more than the limit of {limit} ({source}); "
            f"{len(too_long)} of {len(prompts)} prompts are over it. Shorten the conversation or raise max_prompt_tokens."
        )

    # -- generation ----------------------------------------------------------------------
    def with_system_prompt(self, messages: list[dict]) -> list[dict]:
        if self.config.system_prompt is None or (messages and messages[0].get("role") == "system"):
            return list(messages)
        return [{"role": "system", "content": self.config.system_prompt}, *messages]

    def encode(self, messages: list[dict], tools: list[dict] | None = None):
        messages = self.with_system_prompt(validate_messages(messages))
        return self.encoder.encode(messages, tools=tools, thinking=self.config.thinking,
                                   preserve_thinking=self.config.chat_template_kwargs.get("preserve_thinking"))

    def parse(self, completion_ids: list[int]) -> ParsedCompletion:
        text = self.tokenizer.decode(completion_ids, skip_special_tokens=False)
        return self.chat_format.parse(text, thinking=self.config.thinking)

    def generate(self, conversations: list[list[dict]], tools: list[dict] | None = None, **sampling) -> list[TurnSample]:
        """Sample the next assistant turn of every conversation, in one batched `generate` call."""
        return self.generate_encoded([self.encode(messages, tools) for messages in conversations], **sampling)

    def generate_encoded(self, prompts: list, seeds: list[int | None] | None = None, **sampling) -> list[TurnSample]:
        """Like `generate`, for prompts already encoded (e.g. each with its own tool declarations);
        `seeds[i]` fixes prompt i's sample whatever else is in the batch (None: from the global RNG)."""
        settings = self.sampling(**sampling)
        self.check_prompt_lengths(prompts, settings.max_new_tokens)
        samples = self.generator.generate(prompts, settings, seeds)
        return [
            TurnSample(
                prompt_ids=sample.prompt.input_ids,
                completion_ids=sample.completion_ids,
                logprobs=sample.logprobs,
                parsed=self.parse(sample.completion_ids),
                images=sample.prompt.images,
                pixel_values=sample.prompt.pixel_values,
                image_grid_thw=sample.prompt.image_grid_thw,
                temperature=settings.logprob_temperature,
            )
            for sample in samples
        ]

    def respond(self, messages: list[dict], tools: list[dict] | None = None, **sampling) -> ParsedCompletion:
        """The parsed next turn of one conversation."""
        return self.generate([messages], tools, **sampling)[0].parsed

    async def generate_response(self, messages: list[dict], **sampling) -> str:
        """The visible answer to one conversation (async, for use inside event loops)."""
        parsed = await asyncio.to_thread(self.respond, messages, None, **sampling)
        return parsed.content


def _max_positions(model) -> int | None:
    """The text model's `max_position_embeddings` (multimodal configs keep it in the text config)."""
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text_config, "max_position_embeddings", None)
    return value if isinstance(value, int) else None
