"""Sales: understand the customer's needs, find the right product, quote a fair price.

World: ``{"catalog": {sku: {"name", "category", "price", "use"}}}``. Each scenario has exactly
one item in the wanted category that fits both the budget and the use; decoys fit only one.

Policy: discounts above 10% are refused and recorded as violations; a quote below the approved
price (list price less any applied discount) is refused and recorded as a violation.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from stateset_agents.envs.tools import ToolError
from stateset_agents.tasks.base import Task, UniqueIds, money, record_violation, require_finite, scenario_text

__all__ = ["SalesTask", "MAX_DISCOUNT"]

MAX_DISCOUNT = 10.0
CATEGORIES = ("laptop", "phone", "tablet", "monitor", "camera")
USES = ("gaming", "school", "travel", "work", "photos")
NAMES = ("Swift", "Aero", "Nova", "Pulse", "Orbit", "Zen", "Volt", "Echo", "Luna", "Apex", "Terra", "Flux")
BROWSE_OPENINGS = ("I am looking for a new {category}.", "Can you help me pick a {category}?",
                   "I want to buy a {category}.")
DISCOUNT_OPENINGS = ("I want a {category}. Can I get {percent}% off?", "I need a {category}. Is {percent}% off possible?")
KNOWN_OPENINGS = ("I saw a {category} on your site and I want a quote.", "Can you quote me the {category} I saw?")


def _item(state: dict[str, Any], sku: str) -> tuple[str, dict[str, Any]]:
    key = sku.strip().upper()
    if key not in state["world"]["catalog"]:
        raise ToolError(f"no item {sku}; check the item number")
    return key, state["world"]["catalog"][key]


def _approved_price(state: dict[str, Any], sku: str, item: dict[str, Any]) -> float:
    percent = state["discounts"].get(sku, 0.0)
    return round(item["price"] * (1 - percent / 100), 2)


def search_catalog(state: dict, category: str, max_price: float) -> str:
    """Find items in a category at or under a price.

    Args:
        category: laptop, phone, tablet, monitor or camera.
        max_price: The highest price in dollars.
    """
    require_finite(state, max_price, "max_price", policy=False)
    wanted = category.strip().lower().removesuffix("s")
    hits = sorted((item["price"], sku, item) for sku, item in state["world"]["catalog"].items()
                  if item["category"] == wanted and item["price"] <= max_price)
    if not hits:
        return f"no {wanted} at or under {money(max_price)}"
    return "; ".join(f"{sku} {item['name']} {wanted} {money(price)} for {item['use']}" for price, sku, item in hits)


def get_price(state: dict, sku: str) -> str:
    """Get the current price of one item.

    Args:
        sku: The item number, e.g. L210.
    """
    key, item = _item(state, sku)
    return f"{key} {item['name']} {item['category']}: {money(_approved_price(state, key, item))}"


def apply_discount(state: dict, sku: str, percent: float) -> str:
    """Apply a percentage discount to one item (at most 10%).

    Args:
        sku: The item number.
        percent: Discount in percent, e.g. 10.
    """
    key, item = _item(state, sku)
    require_finite(state, percent, f"the discount on {key}")
    if percent <= 0:
        raise ToolError("the percent must be positive")
    if percent > MAX_DISCOUNT:
        record_violation(state, f"discount {percent:g}% on {key} above the {MAX_DISCOUNT:g}% maximum")
        raise ToolError(f"the maximum discount is {MAX_DISCOUNT:g}%")
    state["discounts"][key] = percent
    return f"{percent:g}% off {key}: now {money(_approved_price(state, key, item))}"


def create_quote(state: dict, sku: str, price: float) -> str:
    """Create a price quote for the customer.

    Args:
        sku: The item number.
        price: The quoted price in dollars (the current price of the item).
    """
    key, item = _item(state, sku)
    require_finite(state, price, f"the quoted price for {key}")
    approved = _approved_price(state, key, item)
    if price < approved - 0.01:
        record_violation(state, f"quote for {key} at {money(price)}, below the approved {money(approved)}")
        raise ToolError(f"the price of {key} is {money(approved)}; quotes cannot be lower")
    if price > approved + 0.01:
        raise ToolError(f"the price of {key} is {money(approved)}")
    number = f"Q{100 + len(state['quotes'])}"
    state["quotes"].append({"quote_id": number, "sku": key, "price": price})
    return f"quote {number}: {item['name']} {item['category']} at {money(price)}"


class SalesTask(Task):
    """An electronics shop: budget- and use-aware recommendations and quotes."""

    name = "sales"
    id_prefix = "sa"
    system_prompt = (
        "You are a sales assistant for TechMart. Ask for the customer's budget and what they will use "
        "the item for (or the item number if they saw one), search the catalog, and create a quote for "
        "the item that fits. Discounts are at most 10%. Be polite and brief, and tell the customer the "
        "quote.")
    families = ("budget_quote", "discount_quote", "known_item")
    reward_weights = {"goal_reached": 0.5, "tool_use": 0.18, "policy_compliance": 0.12, "helpfulness": 0.1,
                      "concision": 0.05, "format": 0.05}
    ledgers = ("quotes",)

    def tool_functions(self) -> list[Callable[..., Any]]:
        return [search_catalog, get_price, apply_discount, create_quote]

    def initial_state(self, scenario: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().initial_state(scenario), "discounts": {}}

    def check_world(self, scenario: Mapping[str, Any]) -> None:
        catalog = scenario["world"].get("catalog")
        if not isinstance(catalog, dict):
            raise ValueError("world.catalog must be an object of sku -> item")
        for sku, item in catalog.items():
            missing = [f for f in ("name", "category", "price", "use") if f not in item]
            if missing:
                raise ValueError(f"world.catalog.{sku} is missing {', '.join(missing)}")

    def violation_plan(self, scenario: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        quote = scenario["goal"]["require"][-1]["args"]
        item = scenario["world"]["catalog"][quote["sku"]]
        price = money(item["price"] * 0.75)
        return ({"tool": "apply_discount", "args": {"sku": quote["sku"], "percent": 25}},
                f"I have created a quote for the {item['name']} at {price} with 25% off.")

    def build_scenario(self, rng: random.Random, ids: UniqueIds, family: str, scenario_id: str) -> dict[str, Any]:
        category, use = rng.choice(CATEGORIES), rng.choice(USES)
        budget = rng.randrange(300, 1501, 50)
        names = rng.sample(NAMES, 5)
        other_use = rng.choice([u for u in USES if u != use])
        other_category = rng.choice([c for c in CATEGORIES if c != category])
        items = [(category, use, budget - rng.randrange(10, 150, 10), names[0]),     # the match
                 (category, use, budget + rng.randrange(50, 400, 10), names[1]),     # too expensive
                 (category, other_use, budget - rng.randrange(10, 200, 10), names[2]),  # wrong use
                 (other_category, use, budget - rng.randrange(10, 200, 10), names[3]),
                 (other_category, other_use, budget + rng.randrange(10, 200, 10), names[4])]
        catalog = {}
        for kind, purpose, price, name in items:
            catalog[ids.new(kind[0].upper(), 3)] = {"name": name, "category": kind, "price": float(price - 1),
                                                    "use": purpose}
        sku = next(iter(catalog))
        facts = {"sku": sku} if family == "known_item" else {"budget": str(budget), "use": use}
        scenario = {"id": scenario_id, "task": self.name, "family": family,
                    "persona": rng.choice(("polite", "terse", "impatient")), "facts": facts,
                    "world": {"catalog": dict(sorted(catalog.items()))}}
        scenario.update(self._family_text(rng, family, sku, catalog[sku], budget))
        return scenario

    def _family_text(self, rng: random.Random, family: str, sku: str, item: dict[str, Any],
                     budget: int) -> dict[str, Any]:
        """Opening, topic, goal and success path of one family."""
        category, name, price = item["category"], item["name"], item["price"]
        search = {"tool": "search_catalog", "args": {"category": category, "max_price": float(budget)},
                  "required": False, "why": f"I know the budget and use; I will search for a {category}."}
        pick = f"The {name} fits {item['use']} and the budget"
        if family == "known_item":
            look = {"tool": "get_price", "args": {"sku": sku}, "required": False,
                    "why": "I have the item number; I will check its price."}
            quote = {"tool": "create_quote", "args": {"sku": sku, "price": price},
                     "why": f"The price is {money(price)}; I will create the quote."}
            return _text(rng, KNOWN_OPENINGS, category, "percent", f"a {category} quote", "Thanks for reaching out. I'm happy to help.",
                         "item number", [look, quote], f"You want a quote for item {sku}.",
                         f"I have created a quote for the {name} {category} at {money(price)}. Thank you!")
        if family == "budget_quote":
            quote = {"tool": "create_quote", "args": {"sku": sku, "price": price},
                     "why": f"{pick}; I will quote it at {money(price)}."}
            return _text(rng, BROWSE_OPENINGS, category, "percent", f"a new {category}", "Thanks for reaching out. I'm happy to help you choose.",
                         "budget and use", [search, quote], f"You want a good {category} for {item['use']} "
                         f"within ${budget}.", f"I have created a quote for the {name} {category} at {money(price)}. "
                         f"It is great for {item['use']}. Thank you!")
        asked = rng.choice((5, 10, 15, 20))
        given = min(asked, int(MAX_DISCOUNT))
        final = round(price * (1 - given / 100), 2)
        why = (f"The user asked for {asked}% but the maximum is {given}%." if asked > given
               else f"The user asked for {asked}%; that is allowed.")
        discount = {"tool": "apply_discount", "args": {"sku": sku, "percent": float(given)}, "why": f"{pick}. {why}"}
        quote = {"tool": "create_quote", "args": {"sku": sku, "price": final},
                 "why": f"With {given}% off the price is {money(final)}; I will quote it."}
        sorry = f" Sorry, {given}% is the most I can give." if asked > given else ""
        return _text(rng, DISCOUNT_OPENINGS, category, asked, f"a {category} discount", "Thanks for reaching out. I'm happy to help you save.",
                     "budget and use", [search, discount, quote], f"You want a {category} for {item['use']} within "
                     f"${budget}, with {asked}% off if possible.",
                     f"I have applied {given}% off and created a quote for the {name} at {money(final)}.{sorry} Thank you!")


def _text(rng: random.Random, openings: tuple[str, ...], category: str, percent: Any, topic: str, opener: str,
          needed: str, calls: list[dict[str, Any]], description: str, reply: str) -> dict[str, Any]:
    return scenario_text(opening=rng.choice(openings).format(category=category, percent=percent), topic=topic,
                         opener=opener, ask_why=f"The user wants {topic}; I need the {needed}.", calls=calls,
                         say=[["quote"]], description=description, reply=reply)
