"""Hidden facts: what the simulated user knows and reveals only when asked.

A `FactSpec` says how an agent asks for a fact (regexes matched on its visible text), how the
user phrases the answer (templates with ``{value}``) and the question a well-behaved agent asks.
Facts without a spec fall back to their key: ``serial_number`` is asked for by "serial number".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["FactSpec", "COMMON_FACTS", "fact_spec", "fact_asked", "fact_revealed_in"]


@dataclass(frozen=True)
class FactSpec:
    """How one hidden fact is asked for and revealed."""

    key: str
    question: str
    ask_patterns: tuple[str, ...]
    reveal: tuple[str, ...]
    label: str = ""

    @property
    def noun(self) -> str:
        """Human name of the fact ("order number")."""
        return self.label or self.key.replace("_", " ")


COMMON_FACTS: dict[str, FactSpec] = {spec.key: spec for spec in (
    FactSpec("order_id", "Could you please share your order number?",
             (r"order (number|id|#|no)",),
             ("My order number is {value}.", "It is order {value}.", "The order number is {value}."),
             "order number"),
    FactSpec("device_id", "Could you please share your device id?",
             (r"device (id|number)", r"serial"),
             ("The device id is {value}.", "My device id is {value}.", "It is {value}."), "device id"),
    FactSpec("account_id", "Could you please share your account id?",
             (r"account (id|number)", r"user ?name"),
             ("My account id is {value}.", "The account id is {value}.", "It is {value}."), "account id"),
    FactSpec("region", "Could you please tell me your region?",
             (r"\bregion\b", r"where (are you|do you live)", r"\blocation\b", r"\barea\b"),
             ("I am in the {value} region.", "The {value} region.", "I live in the {value} region."),
             "region"),
    FactSpec("budget", "Could you please tell me your budget?",
             (r"\bbudget\b", r"how much (do|can|would) you", r"price range"),
             ("My budget is ${value}.", "Up to ${value}.", "I can spend ${value}."), "budget"),
    FactSpec("use", "What will you use it for?",
             (r"use it for", r"\bwhat for\b", r"\bpurpose\b", r"\buse\b"),
             ("I need it for {value}.", "Mostly for {value}.", "It is for {value}."), "use"),
    FactSpec("sku", "Could you please share the item number?",
             (r"item (number|id|code)", r"\bsku\b", r"product (number|code|id)"),
             ("The item number is {value}.", "It is item {value}.", "Item {value}."), "item number"),
)}


def fact_spec(key: str, specs: Mapping[str, FactSpec] | None = None) -> FactSpec:
    """The spec for `key` from `specs`, then `COMMON_FACTS`, else one derived from the key."""
    for table in (specs or {}, COMMON_FACTS):
        if key in table:
            return table[key]
    noun = key.replace("_", " ")
    return FactSpec(key, f"Could you please tell me your {noun}?", (re.escape(noun),),
                    (f"My {noun} is {{value}}.", f"The {noun} is {{value}}."), noun)


def fact_asked(spec: FactSpec, agent_text: str) -> bool:
    """The agent's visible text asks for this fact."""
    lowered = agent_text.lower()
    return any(re.search(pattern, lowered) for pattern in spec.ask_patterns)


def fact_revealed_in(value: object, text: str) -> bool:
    """The fact's value appears in `text` as a whole word (case-insensitive)."""
    return re.search(rf"(?<![\w]){re.escape(str(value).lower())}(?![\w])", text.lower()) is not None
