"""A simulated user played by any chat model.

`LLMUserSimulator(chat_fn, scenario)` briefs the model with the scenario (persona, problem,
hidden facts to reveal only when asked, goal) and shows it the conversation from the customer's
side: its own earlier messages as ``assistant``, the agent's visible text as ``user`` (tool calls
and tool results are not shown to customers). ``chat_fn(messages) -> str`` may be sync or async
(a local model, an OpenAI-compatible endpoint...). The reply ends the episode when it contains
``[DONE]`` (satisfied) or ``[GIVE_UP]``; the markers are removed from the text.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from stateset_agents.core.messages import message_text
from stateset_agents.envs.facts import FactSpec, fact_revealed_in, fact_spec
from stateset_agents.envs.users import UserContext, UserReply

__all__ = ["LLMUserSimulator", "DONE_MARKER", "GIVE_UP_MARKER"]

DONE_MARKER = "[DONE]"
GIVE_UP_MARKER = "[GIVE_UP]"

ChatFn = Callable[[list[dict[str, Any]]], "str | Awaitable[str]"]


def _run_sync(awaitable: Awaitable[str]) -> str:
    """Run a coroutine from sync code, even when an event loop is already running here."""
    async def runner() -> str:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(runner())
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(runner())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


class LLMUserSimulator:
    """Plays the scenario's customer with `chat_fn`; single use, like its environment."""

    def __init__(self, chat_fn: ChatFn, scenario: Mapping[str, Any], *,
                 fact_specs: Mapping[str, FactSpec] | None = None, max_reply_chars: int = 600) -> None:
        self.chat_fn = chat_fn
        self.scenario = scenario
        self.facts: dict[str, Any] = dict(scenario.get("facts", {}))
        self.specs = {key: fact_spec(key, fact_specs) for key in self.facts}
        self.max_reply_chars = max_reply_chars

    def brief(self) -> str:
        """The system prompt describing who the model plays."""
        goal = self.scenario.get("goal", {})
        lines = [
            "You are role-playing a customer talking to a support agent. Stay in character and write "
            "only the customer's next message, in one or two short sentences.",
            f"Persona: {self.scenario.get('persona', 'polite')}.",
            f"Your problem: {self.scenario.get('opening', '')}",
        ]
        image = self.scenario.get("image")
        if image:
            lines.append(f"You attached a photo; it shows the item is {image.get('kind')}.")
        if self.facts:
            lines.append("Facts you know. Reveal each one only when the agent asks for it:")
            lines += [f"- {self.specs[key].noun}: {value}" for key, value in self.facts.items()]
        if goal.get("description"):
            lines.append(f"Your goal: {goal['description']}")
        lines.append(f"When your problem is solved, end your message with {DONE_MARKER}. If the agent is "
                     f"rude or unhelpful for several turns and you want to stop, end it with {GIVE_UP_MARKER}.")
        return "\n".join(lines)

    def build_messages(self, conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The model's view: brief, then the conversation with user/assistant roles swapped."""
        view: list[dict[str, Any]] = [{"role": "system", "content": self.brief()}]
        for message in conversation:
            role = {"user": "assistant", "assistant": "user"}.get(message.get("role", ""))
            text = message_text(message)
            if role is None or not text:
                continue
            if view[-1]["role"] == role:
                view[-1] = {"role": role, "content": f"{view[-1]['content']}\n{text}"}
            else:
                view.append({"role": role, "content": text})
        return view

    def reply(self, ctx: UserContext) -> UserReply:
        raw = self.chat_fn(self.build_messages(ctx.messages))
        if inspect.isawaitable(raw):
            raw = _run_sync(raw)
        return self._interpret(raw)

    async def areply(self, ctx: UserContext) -> UserReply:
        raw = self.chat_fn(self.build_messages(ctx.messages))
        if inspect.isawaitable(raw):
            raw = await raw
        return self._interpret(raw)

    def _interpret(self, raw: Any) -> UserReply:
        text = str(raw if raw is not None else "")
        done = DONE_MARKER in text
        gave_up = GIVE_UP_MARKER in text and not done
        content = text.replace(DONE_MARKER, "").replace(GIVE_UP_MARKER, "").strip()[: self.max_reply_chars]
        revealed = {key: str(value) for key, value in self.facts.items() if fact_revealed_in(value, content)}
        outcome = "success" if done else "gave_up" if gave_up else ""
        fallback = "Thanks." if done else "Bye." if gave_up else "..."
        return UserReply(content or fallback, done=done or gave_up, outcome=outcome,
                         revealed=revealed)
