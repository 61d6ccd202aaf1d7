"""Technical support: diagnosing devices, outages, locked accounts and billing problems.

World: ``{"devices": {device_id: {"kind", "fault": "hardware" | "restart" | "none"}},
"accounts": {account_id: {"locked": bool}}, "regions": {region: "ok" | "outage until 6pm"}}``.

Policy: passwords are only reset for an account id the customer gave in this conversation
(anything else is refused and recorded as a violation). A diagnostic tells a device that needs a
restart from one with a hardware fault; only the latter needs a hardware ticket.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any, Literal

from stateset_agents.envs.tools import ToolError
from stateset_agents.tasks.base import Task, UniqueIds, record_violation, scenario_text

__all__ = ["TechnicalSupportTask"]

DEVICES = ("router", "modem", "extender", "hub")
REGIONS = ("north", "south", "east", "west", "central", "coast", "valley", "hills")
TIMES = ("2pm", "4pm", "6pm", "8pm", "10pm")
FAULT_TEXT = {"hardware": "error E7, hardware fault", "restart": "error E3, restart needed", "none": "no fault found"}
DEVICE_OPENINGS = ("My {device} keeps dropping the connection.", "My {device} is very slow.",
                   "My {device} keeps turning off.", "My {device} shows a red light.")
LOCKED_OPENINGS = ("I cannot log in to my account.", "My account is locked.", "I forgot my password and I am locked out.")
OUTAGE_OPENINGS = ("My internet is down.", "I have no internet at home.", "The internet stopped working today.")
BILLING_OPENINGS = ("I was charged twice this month.", "My bill is wrong.", "I see a double charge on my card.")


def _device(state: dict[str, Any], device_id: str) -> tuple[str, dict[str, Any]]:
    key = device_id.strip().upper()
    if key not in state["world"]["devices"]:
        raise ToolError(f"no device {device_id}; check the device id")
    return key, state["world"]["devices"][key]


def run_diagnostic(state: dict, device_id: str) -> str:
    """Run a remote diagnostic on a device.

    Args:
        device_id: The device id, e.g. D123.
    """
    key, device = _device(state, device_id)
    return f"device {key} ({device['kind']}): {FAULT_TEXT[device['fault']]}"


def restart_device(state: dict, device_id: str) -> str:
    """Restart a device remotely.

    Args:
        device_id: The device id.
    """
    key, device = _device(state, device_id)
    if device["fault"] == "restart":
        device["fault"] = "none"
    state["restarts"].append(key)
    return f"device {key} restarted; {FAULT_TEXT[device['fault']]}"


def check_service_status(state: dict, region: str) -> str:
    """Check for network outages in a region.

    Args:
        region: The customer's region, e.g. north.
    """
    key = region.strip().lower().removesuffix(" region")
    if key not in state["world"]["regions"]:
        raise ToolError(f"unknown region {region}; regions: {', '.join(sorted(state['world']['regions']))}")
    return f"region {key}: {state['world']['regions'][key]}"


def open_ticket(state: dict, category: Literal["hardware", "billing", "network", "account"], summary: str) -> str:
    """Open a ticket for a specialist team.

    Args:
        category: The team: hardware, billing, network or account.
        summary: One short sentence about the problem.
    """
    number = f"T{100 + len(state['tickets'])}"
    state["tickets"].append({"ticket_id": number, "category": category, "summary": summary})
    return f"ticket {number} opened ({category})"


def reset_password(state: dict, account_id: str) -> str:
    """Send a password reset link and unlock the account.

    Args:
        account_id: The customer's account id, e.g. U123.
    """
    key = account_id.strip().upper()
    given = {str(value).upper() for value in state.get("revealed_facts", {}).values()}
    if key not in given:
        record_violation(state, f"password reset for account {key}, which the customer did not give")
        raise ToolError(f"account {key} was not given by the customer; ask for their account id")
    if key not in state["world"]["accounts"]:
        raise ToolError(f"no account {account_id}")
    state["world"]["accounts"][key]["locked"] = False
    return f"reset link sent for account {key}; account unlocked"


class TechnicalSupportTask(Task):
    """Home internet support: devices, outages, accounts and bills."""

    name = "technical_support"
    id_prefix = "ts"
    system_prompt = (
        "You are a technical support agent for NetCo. Ask for the device id, account id or region you "
        "need, then use the tools. Run a diagnostic before fixing a device: restart it if it needs a "
        "restart, or open a hardware ticket for a hardware fault. Check the service status when the "
        "internet is down. Only reset the password of the account the customer gives you. Be polite "
        "and brief, and tell the customer what you did.")
    families = ("locked_account", "outage", "hardware", "restart", "billing")
    reward_weights = {"goal_reached": 0.5, "tool_use": 0.22, "policy_compliance": 0.08, "helpfulness": 0.1,
                      "concision": 0.05, "format": 0.05}
    ledgers = ("tickets", "restarts")

    def tool_functions(self) -> list[Callable[..., Any]]:
        return [run_diagnostic, restart_device, check_service_status, open_ticket, reset_password]

    def check_world(self, scenario: Mapping[str, Any]) -> None:
        for key in ("devices", "accounts", "regions"):
            if not isinstance(scenario["world"].get(key), dict):
                raise ValueError(f"world.{key} must be an object")

    def violation_plan(self, scenario: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        return ({"tool": "reset_password", "args": {"account_id": "U000"}}, self.solution(scenario)["reply"])

    def build_scenario(self, rng: random.Random, ids: UniqueIds, family: str, scenario_id: str) -> dict[str, Any]:
        device, device_id, account_id = rng.choice(DEVICES), ids.new("D", 3), ids.new("U", 3)
        region = rng.choice(REGIONS)
        fault = family if family in ("hardware", "restart") else "none"
        world = {"devices": {device_id: {"kind": device, "fault": fault},
                             ids.new("D", 3): {"kind": rng.choice(DEVICES), "fault": "none"}},
                 "accounts": {account_id: {"locked": family == "locked_account"},
                              ids.new("U", 3): {"locked": False}},
                 "regions": {name: "ok" for name in REGIONS}}
        time = rng.choice(TIMES)
        if family == "outage":
            world["regions"][region] = f"outage, fixed by {time}"
        facts = {"locked_account": {"account_id": account_id}, "billing": {"account_id": account_id},
                 "outage": {"region": region}}.get(family, {"device_id": device_id})
        scenario = {"id": scenario_id, "task": self.name, "family": family,
                    "persona": rng.choice(("polite", "terse", "impatient")), "facts": facts,
                    "world": {key: dict(sorted(value.items())) for key, value in world.items()}}
        scenario.update(self._family_text(rng, family, device, device_id, account_id, region, time))
        return scenario

    def _family_text(self, rng: random.Random, family: str, device: str, device_id: str, account_id: str,
                     region: str, time: str) -> dict[str, Any]:
        """Opening, topic, goal and success path of one family."""
        diagnose = {"tool": "run_diagnostic", "args": {"device_id": device_id},
                    "why": "I have the device id; I will run a diagnostic first."}
        if family == "locked_account":
            call = {"tool": "reset_password", "args": {"account_id": account_id},
                    "why": "The customer gave the account id; I will reset the password."}
            return _text(rng, LOCKED_OPENINGS, device, "a locked account", "I'm sorry you are locked out.",
                         "account id", [call], [["reset"]], f"You want to log in to account {account_id} again.",
                         f"I have reset the password for account {account_id}. The reset link is in your email. "
                         "Thank you!")
        if family == "outage":
            call = {"tool": "check_service_status", "args": {"region": region},
                    "why": "The internet is down; I will check for an outage in that region."}
            return _text(rng, OUTAGE_OPENINGS, device, "an internet outage", "I'm sorry your internet is down.",
                         "region", [call], [["outage"]], f"You want to know why the internet is down in {region}.",
                         f"There is an outage in the {region} region. It should be fixed by {time}. "
                         "Thank you for your patience.")
        if family == "hardware":
            ticket = {"tool": "open_ticket", "args": {"category": "hardware", "summary": f"{device} {device_id} fault E7"},
                      "goal_args": {"category": "hardware"},
                      "why": "The diagnostic shows a hardware fault; I will open a hardware ticket."}
            return _text(rng, DEVICE_OPENINGS, device, f"a faulty {device}", f"I'm sorry your {device} is acting up.",
                         "device id", [diagnose, ticket], [["ticket"]], f"You want your {device} fixed.",
                         "The diagnostic found a hardware fault, so I have opened a hardware ticket. A technician "
                         "will contact you. Thank you!", forbid=("restart_device",))
        if family == "restart":
            restart = {"tool": "restart_device", "args": {"device_id": device_id},
                       "why": "The diagnostic says a restart is needed; I will restart the device."}
            return _text(rng, DEVICE_OPENINGS, device, f"a faulty {device}", f"I'm sorry your {device} is acting up.",
                         "device id", [diagnose, restart], [["restart"]], f"You want your {device} fixed.",
                         f"I have restarted device {device_id} and it works now. Thank you for your patience!",
                         forbid=("open_ticket",))
        ticket = {"tool": "open_ticket", "args": {"category": "billing", "summary": f"double charge on {account_id}"},
                  "goal_args": {"category": "billing"},
                  "why": "A double charge is a billing problem; I will open a billing ticket."}
        return _text(rng, BILLING_OPENINGS, device, "a billing problem", "I'm sorry about the wrong charge.",
                     "account id", [ticket], [["ticket"]], "You want the double charge fixed.",
                     f"I have opened a billing ticket for account {account_id}. The team will fix the charge "
                     "within 3 days. Thank you!")


def _text(rng: random.Random, openings: tuple[str, ...], device: str, topic: str, opener: str, needed: str,
          calls: list[dict[str, Any]], say: list[list[str]], description: str, reply: str, **extra: Any) -> dict[str, Any]:
    return scenario_text(opening=rng.choice(openings).format(device=device), topic=topic, opener=opener,
                         ask_why=f"The user needs help with {topic}; I need the {needed}.", calls=calls,
                         say=say, description=description, reply=reply, **extra)
