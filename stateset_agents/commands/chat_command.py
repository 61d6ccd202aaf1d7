"""`stateset-agents chat`: talk to the agent in a terminal, as the customer, with the task's tools live.

    stateset-agents chat --model tiny-kimi-k2.5 --task customer_service
    stateset-agents chat --model tiny-kimi-k2.5 --adapter outputs/customer_service_gspo --scenario cs-eval-003

The person at the terminal plays the customer of one scenario (`--scenario ID` from the task's eval or
train split; the first eval scenario by default): the header shows the customer's goal and the details
the agent may ask for. The first message may be left empty to send the scenario's own opening (with its
photo, if it has one). The agent runs in the task's real environment: its tool calls execute against
the scenario's world state exactly as in training and evaluation (`TaskEnvironment.step`), and the
goal is re-checked after every call; the customer's lines take the simulated user's place.

Shown: the agent's thinking (dimmed), each tool call and its result (panels; a failing call in red),
the agent's reply after ``agent>``, and "goal met" when the environment state meets the scenario's
goal. After `--max-agent-turns` turns of tool calls without a reply, the customer speaks again.
Commands: ``/reset`` starts the conversation over (a fresh world state), ``/quit`` (or Ctrl-D) exits,
``/help``. `--adapter` takes what `stateset-agents eval --adapter` takes (a PEFT adapter, a run
directory's latest checkpoint, a checkpoint); sampling settings come from the adapter's run, else the
Kimi-K2.5 preset, and `--seed` fixes the sampled turns (a `/reset` conversation typed the same way
gets the same replies). HF backend only (a `--vllm-url` client is future work).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from stateset_agents.commands.eval_command import (
    Candidate, EvalInputError, EvalSettings, PolicyLoader, check_base_model, default_settings, resolve_weights,
)

__all__ = ["HumanUser", "ChatSession", "add_chat_arguments", "chat_from_args", "find_scenario"]

HELP = "commands: /reset starts over, /quit (or Ctrl-D) exits, /help shows this"
Responder = Callable[[list[dict[str, Any]], list[dict[str, Any]], int], Any]  # (messages, tools, turn) -> parsed


class HumanUser:
    """The environment's user is the person at the terminal: `reply` returns the line they typed
    (set in `pending` just before the environment steps the agent's turn)."""

    def __init__(self) -> None:
        self.pending: str | None = None

    def reply(self, ctx):
        from stateset_agents.envs.users import UserReply

        text, self.pending = self.pending or "", None
        return UserReply(text)

    async def areply(self, ctx):
        return self.reply(ctx)


class ChatSession:
    """One terminal conversation loop on one scenario; `run` returns the exit status."""

    def __init__(self, task, scenario: dict[str, Any], respond: Responder, console,
                 read_line: Callable[[str], str | None], max_agent_turns: int = 8):
        self.task, self.scenario, self.respond = task, scenario, respond
        self.console, self.read_line, self.max_agent_turns = console, read_line, max_agent_turns
        self.user = HumanUser()
        self.conversations = 0

    # -- output ------------------------------------------------------------------------------
    def say(self, text: str, style: str | None = None) -> None:
        from rich.text import Text

        self.console.print(Text(text, style=style or ""))

    def header(self) -> None:
        scenario = self.scenario
        facts = ", ".join(f"{key}: {value}" for key, value in scenario.get("facts", {}).items()) or "none"
        self.say(f"scenario {scenario.get('id', '?')} of {self.task.name}: {scenario.get('topic', '')} "
                 f"(customer persona: {scenario.get('persona', '?')})", "bold")
        self.say(f"your goal as the customer: {scenario.get('goal', {}).get('description', '?')}")
        self.say(f"your details (the agent may ask): {facts}")
        self.say(f"the agent's tools: {', '.join(self.task.tools.names)}")
        self.say(HELP, "dim")

    def show_turn(self, turn) -> None:
        from rich.panel import Panel
        from rich.text import Text

        if turn.reasoning:
            self.say(f"thinking: {turn.reasoning.strip()}", "dim italic")
        for error in turn.errors:
            self.say(f"(format: {error})", "dim red")
        for call in turn.tool_calls:
            arguments = call.raw_arguments or ("" if call.arguments is None else str(call.arguments))
            self.console.print(Panel(Text(f"{call.name or '?'}({arguments})"), title="tool call",
                                     title_align="left", border_style="cyan", expand=False))
        if turn.content or not turn.tool_calls:
            self.console.print(Text.assemble(("agent> ", "bold green"), turn.content or "(empty reply)"))

    def show_tool_results(self, messages: list[dict[str, Any]]) -> None:
        from rich.panel import Panel
        from rich.text import Text

        from stateset_agents.envs.tools import ERROR_PREFIX

        for message in messages:
            content = str(message.get("content", ""))
            failed = content.startswith(ERROR_PREFIX)
            self.console.print(Panel(Text(content), title=f"tool result: {message.get('name', '?')}",
                                     title_align="left", border_style="red" if failed else "green", expand=False))

    # -- the loop ----------------------------------------------------------------------------
    def new_conversation(self) -> None:
        self.conversations += 1
        self.env = self.task.make_env(self.scenario, max_turns=1_000_000, user=self.user)
        self.messages = self.env.reset()  # [system, the scenario's opening]
        self.opening = self.messages.pop()
        self.pending_turn = None  # the agent's last reply, stepped when the customer answers it
        self.turn_index = 0
        self.started = False
        self.goal_met = False
        opening = self.opening.get("content")
        opening = opening if isinstance(opening, str) else " ".join(
            part.get("text", "[photo]") if part.get("type") == "text" else "[photo]" for part in opening)
        self.say(f"-- conversation {self.conversations}; an empty first line sends the scenario's opening: "
                 f"{opening!r}", "dim")

    def customer_says(self, line: str) -> bool:
        """Add the customer's line to the conversation; False when there is nothing to send."""
        if not self.started:
            self.started = True
            self.messages.append(self.opening if not line.strip() else {"role": "user", "content": line})
            return True
        if not line.strip():
            return False
        if self.pending_turn is None:  # the agent ran out of turns calling tools: no reply to answer
            self.messages.append({"role": "user", "content": line})
            return True
        self.user.pending = line
        result = self.env.step(self.pending_turn)  # the environment's user turn: what was typed
        self.pending_turn = None
        self.messages.extend(result.messages)
        return True

    def agent_turns(self) -> None:
        """Sample agent turns (running their tool calls) until the agent replies in words."""
        from stateset_agents.rollout.agent import PromptTooLongError

        tools = self.task.tools.schemas()
        for _ in range(self.max_agent_turns):
            try:
                turn = self.respond(self.messages, tools, self.turn_index)
            except PromptTooLongError as error:
                self.say(f"the conversation no longer fits the model's context ({error}); starting over", "red")
                self.new_conversation()
                return
            self.turn_index += 1
            self.show_turn(turn)
            self.messages.append(turn.to_message())
            if not turn.tool_calls:
                self.pending_turn = turn
                return
            result = self.env.step(turn)  # the tools run against this conversation's world state
            self.show_tool_results(result.messages)
            self.messages.extend(result.messages)
            if result.state.get("goal_met") and not self.goal_met:
                self.goal_met = True
                self.say("goal met in the environment state", "bold green")
        self.say(f"(the agent took {self.max_agent_turns} turns without replying; your turn)", "dim")

    def run(self) -> int:
        self.header()
        self.new_conversation()
        while True:
            line = self.read_line("you> ")
            if line is None:  # EOF (Ctrl-D)
                self.say("bye")
                return 0
            command = line.strip()
            if command == "/quit":
                self.say("bye")
                return 0
            if command == "/reset":
                self.new_conversation()
                continue
            if command == "/help":
                self.say(HELP, "dim")
                continue
            if command.startswith("/"):
                self.say(f"unknown command {command}; {HELP}", "red")
                continue
            if self.customer_says(line):
                self.agent_turns()


def read_terminal_line(prompt: str) -> str | None:
    """`input` with line editing where readline exists; None at end of input."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    try:
        return input(prompt)
    except EOFError:
        print()
        return None


def find_scenario(task, scenario_id: str | None) -> dict[str, Any]:
    """The scenario `scenario_id` from the task's eval or train split (default: the first eval scenario)."""
    evaluation = task.scenarios("eval")
    if scenario_id is None:
        return evaluation[0]
    training = task.scenarios("train")
    for scenario in evaluation + training:
        if str(scenario.get("id")) == scenario_id:
            return scenario
    examples = [str(s.get("id")) for s in evaluation[:2] + training[:2]]
    raise EvalInputError(f"unknown scenario {scenario_id!r} for task {task.name}; its ids look like "
                         f"{', '.join(examples)} ({len(evaluation)} eval and {len(training)} train scenarios)")


def model_responder(agent, seed: int) -> Responder:
    def respond(messages, tools, turn):
        prompt = agent.encode(messages, tools)
        return agent.generate_encoded([prompt], seeds=[(seed * 1_000_003 + turn) % 2**62])[0].parsed

    return respond


def add_chat_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="base model: embedded name (tiny-kimi-k2.5), local directory or hub id")
    parser.add_argument("--adapter", default=None,
                        help="a PEFT adapter directory, a training run directory (its latest checkpoint) or a "
                             "checkpoint directory")
    parser.add_argument("--task", default="customer_service", help="the task whose tools and scenario are live")
    parser.add_argument("--scenario", default=None, metavar="ID",
                        help="scenario id from the task's eval or train split (default: the first eval scenario)")
    parser.add_argument("--seed", type=int, default=0, help="fixes the sampled turns (default 0)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="tokens sampled per agent turn")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    parser.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=None, help="Kimi thinking mode")
    parser.add_argument("--max-agent-turns", type=int, default=8,
                        help="agent turns (tool calls) in a row before the customer speaks again (default 8)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code shipped with the checkpoint")
    parser.add_argument("--ignore-base-mismatch", action="store_true",
                        help="load an adapter whose adapter_config.json names another base model")


def chat_settings(args: argparse.Namespace, weights) -> EvalSettings:
    from stateset_agents.core.formats.kimi import kimi_temperature

    for flag, value in (("--max-new-tokens", args.max_new_tokens), ("--max-agent-turns", args.max_agent_turns)):
        if value is not None and value < 1:
            raise EvalInputError(f"{flag} must be at least 1, got {value}")
    base, source = default_settings(args.model, weights)
    thinking = base.thinking if args.thinking is None else args.thinking
    temperature = args.temperature
    if temperature is None:
        temperature = kimi_temperature(thinking) if thinking != base.thinking else base.effective_temperature
    return EvalSettings(split="-", samples=1, scenarios=None, seed=args.seed, max_turns=1_000_000,
                        max_new_tokens=args.max_new_tokens or base.max_new_tokens, temperature=float(temperature),
                        top_p=base.top_p, top_k=base.top_k, thinking=thinking, concurrency=1,
                        system_prompt=base.system_prompt, max_prompt_tokens=base.max_prompt_tokens, source=source,
                        system_prompt_tasks=tuple(base.task_sequence))


def chat_from_args(args: argparse.Namespace, read_line: Callable[[str], str | None] = read_terminal_line) -> int:
    """`stateset-agents chat`: bad input is one `error:` line and exit status 2."""
    from rich.console import Console

    from stateset_agents.cli import fail
    from stateset_agents.models.loading import ModelNotAvailableError, UnsupportedSettingError
    from stateset_agents.tasks.registry import UnknownTaskError, get_task

    console = Console(highlight=False)
    try:
        if "," in args.task:
            raise EvalInputError(f"--task {args.task!r}: chat talks to one task at a time")
        task = get_task(args.task)
        scenario = find_scenario(task, args.scenario)
        weights = resolve_weights(args.adapter) if args.adapter is not None else None
        if weights is not None and not args.ignore_base_mismatch:
            check_base_model(weights, args.model)
        settings = chat_settings(args, weights)
        task = settings.task_with_prompt(task)
        candidate = Candidate("policy", args.model, weights)
        console.print(f"agent: {candidate.describe()}", markup=False)
        console.print(settings.describe().replace("split -, all scenarios x 1 samples, ", "")
                      .replace(", max_turns 1000000", ""), markup=False)
        loader = PolicyLoader(args, settings, lambda line: console.print(line, markup=False))
        with loader.activate(candidate) as agent:
            session = ChatSession(task, scenario, model_responder(agent, args.seed), console, read_line,
                                  max_agent_turns=args.max_agent_turns)
            try:
                return session.run()
            except KeyboardInterrupt:
                console.print("\ninterrupted", markup=False)
                return 130
    except (EvalInputError, UnknownTaskError, ModelNotAvailableError, UnsupportedSettingError) as error:
        return fail(str(error))
