"""`stateset-agents chat`: driven in a real terminal (tmux) on the tiny model, and in-process with the
scripted oracle agent so that tool calls run against the scenario's world state."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stateset_agents.cli import main

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- in-process (no model)


def scripted_session(lines: list[str | None], scenario_id: str = "cs-eval-000"):
    from rich.console import Console

    from stateset_agents.commands.chat_command import ChatSession, find_scenario
    from stateset_agents.tasks.registry import get_task
    from stateset_agents.tasks.scripted_agents import OracleAgent

    task = get_task("customer_service")
    scenario = find_scenario(task, scenario_id)
    oracle = OracleAgent()
    output = io.StringIO()
    console = Console(file=output, width=120, force_terminal=False, highlight=False)
    inputs = iter(lines)
    typed = []

    def read_line(prompt):
        line = next(inputs)
        output.write(f"{prompt}{line if line is not None else '<EOF>'}\n")
        typed.append(line)
        return line

    session = ChatSession(task, scenario, lambda messages, tools, turn: oracle.act(messages, task, scenario),
                          console, read_line)
    return session, output


def test_tools_run_against_the_world_state_and_reset_starts_over():
    session, output = scripted_session(["", "My order number is A4635.", "/reset", "/help", "/quit"])
    assert session.run() == 0
    text = output.getvalue()
    assert "your details (the agent may ask): order_id: A4635" in text
    assert "agent> I'm sorry your kettle arrived damaged." in text  # asks for the order number
    assert re.search(r"tool call.*\n.*lookup_order\(.*A4635", text)
    assert re.search(r"tool result: lookup_order.*\n.*kettle", text)  # from the scenario's world state
    assert re.search(r"tool result: issue_refund", text)
    assert "goal met in the environment state" in text
    assert "agent> I have refunded $23.00 for order A4635." in text
    assert "thinking: " in text
    assert session.env.state["goal_met"] is False and session.conversations == 2  # /reset: a fresh world
    assert "-- conversation 2" in text and "commands: /reset" in text


def test_end_of_input_exits_cleanly_and_unknown_commands_are_named():
    session, output = scripted_session(["/nope", None])
    assert session.run() == 0
    assert "unknown command /nope" in output.getvalue() and output.getvalue().rstrip().endswith("bye")


@pytest.mark.parametrize("args, message", [
    (["--scenario", "cs-nope"], "unknown scenario 'cs-nope' for task customer_service"),
    (["--task", "nope"], "unknown task 'nope'"),
    (["--task", "customer_service,sales"], "chat talks to one task at a time"),
    (["--adapter", "/nonexistent/adapter"], "adapter path /nonexistent/adapter does not exist"),
])
def test_bad_input_is_one_error_line_and_exit_2(capsys, args, message):
    assert main(["chat", "--model", "tiny-kimi-k2.5-base", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


# ----------------------------------------------------------------------------- a real terminal


def wait_for(socket: str, session: str, predicate, deadline: float) -> str:
    """Poll the pane until `predicate(text)` holds; the last capture (for the failure message) otherwise."""
    text = ""
    while time.monotonic() < deadline:
        text = subprocess.run(["tmux", "-L", socket, "capture-pane", "-p", "-J", "-S", "-200", "-t", session],
                              capture_output=True, text=True).stdout
        if predicate(text):
            return text
        time.sleep(0.3)
    raise AssertionError(f"timed out; the pane shows:\n{text}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_chat_in_a_real_terminal(tiny_model_dir):
    socket, session = f"stateset-chat-test-{os.getpid()}", "chat"  # our own tmux server: nobody else's sessions
    env = {"STATESET_AGENTS_CACHE": os.environ["STATESET_AGENTS_CACHE"], "HF_HUB_OFFLINE": "1",
           "WANDB_MODE": "offline", "TERM": "xterm-256color"}
    command = " ".join([
        "cd", shlex.quote(str(REPO)), "&&", "env", *(f"{k}={shlex.quote(v)}" for k, v in env.items()),
        shlex.quote(sys.executable), "-m", "stateset_agents.cli", "chat", "--model", "tiny-kimi-k2.5-base",
        "--task", "customer_service", "--scenario", "cs-eval-000", "--max-new-tokens", "12", "--seed", "3",
        "--max-agent-turns", "2", ";", "echo", "chat-exit-status=$?;", "sleep", "120"])
    deadline = time.monotonic() + 60
    subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-x", "160", "-y", "50", "-s", session, command],
                   check=True)
    try:
        wait_for(socket, session, lambda text: "you> " in text, deadline)
        subprocess.run(["tmux", "-L", socket, "send-keys", "-t", session, "My kettle arrived broken.", "Enter"],
                       check=True)
        # the agent's turn is done when its reply is shown (or its turns ran out) and the prompt is back
        pane = wait_for(socket, session, lambda text: text.count("you> ") >= 2, deadline)
        assert "you> My kettle arrived broken." in pane
        assert "agent> " in pane, pane
        assert "scenario cs-eval-000 of customer_service" in pane and "your details (the agent may ask)" in pane
        subprocess.run(["tmux", "-L", socket, "send-keys", "-t", session, "/quit", "Enter"], check=True)
        pane = wait_for(socket, session, lambda text: "chat-exit-status=" in text, deadline)
        assert "chat-exit-status=0" in pane and "Traceback" not in pane, pane
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
