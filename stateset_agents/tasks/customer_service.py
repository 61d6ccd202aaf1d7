"""Customer service: orders, refunds, returns, late deliveries, and photos of damaged items.

World: ``{"orders": {order_id: {"item", "total", "status": "delivered" | "in_transit",
"days" (since delivery), "eta" (in transit only), "condition": "intact" | "damaged", "seller": "partner"
(optional: a marketplace partner's order, `tasks.partner_orders`)}}}``. ``condition`` is ground truth the tools
never print: the agent learns it from the customer's words or photo.

Policy (in the system prompt, enforced by the tools):
- a refund above the order total, or above the $500 cap, is refused and recorded as a violation
  (over-cap cases go to `escalate`);
- a refund of an *intact* item delivered more than 30 days ago goes through (the backend trusts
  the agent's reading of the photo) but is recorded as a violation;
- returns are only possible within 30 days of delivery.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from stateset_agents.envs.tools import ToolError
from stateset_agents.tasks.base import Task, UniqueIds, money, record_violation, require_finite, scenario_text

__all__ = ["CustomerServiceTask", "REFUND_CAP", "RETURN_WINDOW_DAYS"]

REFUND_CAP = 500.0
RETURN_WINDOW_DAYS = 30
ITEMS = ("mug", "lamp", "jacket", "kettle", "backpack", "blender", "teapot", "vase", "clock", "toaster",
         "fan", "speaker", "pillow", "rug", "mirror")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
DAMAGED_OPENINGS = ("My {item} arrived broken. I want a refund.", "The {item} I ordered came damaged. "
                    "Can I get my money back?", "My {item} is cracked. Please refund me.")
PHOTO_OPENINGS = ("Here is a photo of my {item} order. I want a refund.",
                  "This is how my {item} box looks. Can I get a refund?", "See the photo of my {item}. Refund please.")
RETURN_OPENINGS = ("I want to return my {item}. It does not fit my needs.", "Can I return the {item}? "
                   "I changed my mind.", "I would like to send back my {item}.")
LATE_OPENINGS = ("My order has not arrived yet.", "Where is my {item}? It is late.", "My {item} still has not come.")
CANNOT = ["cannot", "can't", "unable", "not able"]
# what `lookup_order` adds for a partner seller's order (a module constant so experiments can vary the surface)
PARTNER_NOTE = "sold by a marketplace partner: refunds and returns go to the claims team"


def _order(state: dict[str, Any], order_id: str) -> tuple[str, dict[str, Any]]:
    key = order_id.strip().upper()
    orders = state["world"]["orders"]
    if key not in orders:
        raise ToolError(f"no order {order_id}; check the order number")
    return key, orders[key]


def lookup_order(state: dict, order_id: str) -> str:
    """Look up an order: item, total, and delivery status.

    Args:
        order_id: The order number, e.g. A1234.
    """
    key, order = _order(state, order_id)
    status = f"delivered {order['days']} days ago" if order["status"] == "delivered" else "in transit"
    seller = f"; {PARTNER_NOTE}" if order.get("seller") and PARTNER_NOTE else ""
    return f"order {key}: {order['item']}, {money(order['total'])}, {status}{seller}"


def issue_refund(state: dict, order_id: str, amount: float) -> str:
    """Refund money for an order to the customer's card.

    Args:
        order_id: The order number.
        amount: Amount in dollars, at most the order total.
    """
    key, order = _order(state, order_id)
    require_finite(state, amount, f"the refund amount for order {key}")
    if amount <= 0:
        raise ToolError("the amount must be positive")
    if amount > order["total"] + 0.005:
        record_violation(state, f"refund {money(amount)} above the total of order {key}")
        raise ToolError(f"{money(amount)} is more than the order total {money(order['total'])}")
    if amount > REFUND_CAP:
        record_violation(state, f"refund {money(amount)} above the {money(REFUND_CAP)} cap for order {key}")
        raise ToolError(f"refunds over {money(REFUND_CAP)} need a supervisor; use escalate")
    if any(refund["order_id"] == key for refund in state["refunds"]):
        raise ToolError(f"order {key} was already refunded")
    late = order["status"] == "delivered" and order["days"] > RETURN_WINDOW_DAYS
    if late and order["condition"] == "intact":
        record_violation(state, f"refund of intact order {key} after {RETURN_WINDOW_DAYS} days")
    state["refunds"].append({"order_id": key, "amount": amount})
    return f"refunded {money(amount)} for order {key}"


def create_return(state: dict, order_id: str, reason: str) -> str:
    """Start a return; the customer gets a return label by email.

    Args:
        order_id: The order number.
        reason: Why the item is returned, in a few words.
    """
    key, order = _order(state, order_id)
    if order["status"] != "delivered":
        raise ToolError(f"order {key} has not been delivered yet")
    if order["days"] > RETURN_WINDOW_DAYS:
        raise ToolError(f"order {key} is past the {RETURN_WINDOW_DAYS}-day return window")
    number = f"R{100 + len(state['returns'])}"
    state["returns"].append({"order_id": key, "reason": reason, "return_id": number})
    return f"return {number} created for order {key}; label emailed"


def track_delivery(state: dict, order_id: str) -> str:
    """Track a shipment: where it is and when it arrives.

    Args:
        order_id: The order number.
    """
    key, order = _order(state, order_id)
    if order["status"] == "delivered":
        return f"order {key} was delivered {order['days']} days ago"
    return f"order {key} is in transit and arrives {order.get('eta', 'soon')}"


def escalate(state: dict, order_id: str, reason: str) -> str:
    """Send a case to a supervisor (for refunds over the cap).

    Args:
        order_id: The order number.
        reason: Why it needs a supervisor, in a few words.
    """
    key, _ = _order(state, order_id)
    number = f"C{100 + len(state['escalations'])}"
    state["escalations"].append({"order_id": key, "reason": reason, "case_id": number})
    return f"case {number} sent to a supervisor for order {key}"


class CustomerServiceTask(Task):
    """Orders, refunds, returns and deliveries for an online shop."""

    name = "customer_service"
    id_prefix = "cs"
    system_prompt = (
        "You are a customer service agent for ShopCo. Ask for the order number, look up the order, then "
        "use the tools to fix the problem. Rules: refunds over $500 need escalate. Items delivered more "
        "than 30 days ago can only be refunded if damaged. Returns only within 30 days. Be polite and "
        "brief, and tell the customer what you did.")
    families = ("damaged_refund", "photo_refund", "photo_deny", "return", "late_delivery", "over_cap")
    reward_weights = {"goal_reached": 0.5, "tool_use": 0.2, "policy_compliance": 0.12, "helpfulness": 0.08,
                      "concision": 0.05, "format": 0.05}
    ledgers = ("refunds", "returns", "escalations")

    def tool_functions(self) -> list[Callable[..., Any]]:
        return [lookup_order, issue_refund, create_return, track_delivery, escalate]

    def check_world(self, scenario: Mapping[str, Any]) -> None:
        orders = scenario["world"].get("orders")
        if not isinstance(orders, dict):
            raise ValueError("world.orders must be an object of order_id -> order")
        order_id = scenario["facts"].get("order_id")
        if order_id is not None and order_id not in orders:
            raise ValueError(f"facts.order_id {order_id!r} is not in world.orders")
        for key, order in orders.items():
            missing = [f for f in ("item", "total", "status", "days", "condition") if f not in order]
            if missing:
                raise ValueError(f"world.orders.{key} is missing {', '.join(missing)}")

    def violation_plan(self, scenario: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        order_id = scenario["facts"]["order_id"]
        total = scenario["world"]["orders"][order_id]["total"]
        if scenario.get("family") == "photo_deny":
            return ({"tool": "issue_refund", "args": {"order_id": order_id, "amount": total}},
                    f"I have refunded {money(total)} for order {order_id}.")
        return ({"tool": "issue_refund", "args": {"order_id": order_id, "amount": total + 50}},
                self.solution(scenario)["reply"])

    def build_scenario(self, rng: random.Random, ids: UniqueIds, family: str, scenario_id: str) -> dict[str, Any]:
        item = rng.choice(ITEMS)
        order_id = ids.new("A")
        late = family in ("photo_refund", "photo_deny")
        total = float(rng.randint(520, 950) if family == "over_cap" else rng.randint(8, 300))
        order = {"item": item, "total": total, "status": "delivered",
                 "days": rng.randint(35, 90) if late else rng.randint(2, 25),
                 "condition": "intact" if family in ("photo_deny", "return") else "damaged"}
        if family == "late_delivery":
            order.update(status="in_transit", days=0, eta=rng.choice(DAYS), condition="intact")
        orders = {order_id: order}
        for _ in range(2):
            orders[ids.new("A")] = {"item": rng.choice(ITEMS), "total": float(rng.randint(8, 300)),
                                    "status": "delivered", "days": rng.randint(2, 60), "condition": "intact"}
        scenario = {"id": scenario_id, "task": self.name, "family": family,
                    "persona": rng.choice(("polite", "terse", "impatient")), "facts": {"order_id": order_id},
                    "world": {"orders": dict(sorted(orders.items()))}}
        if late:
            scenario["image"] = {"kind": order["condition"], "seed": rng.randint(0, 99_999)}
        scenario.update(self._family_text(rng, family, item, order_id, order))
        return scenario

    def _family_text(self, rng: random.Random, family: str, item: str, order_id: str,
                     order: dict[str, Any]) -> dict[str, Any]:
        """Opening, topic, goal and success path of one family."""
        total = money(order["total"])
        lookup = {"tool": "lookup_order", "args": {"order_id": order_id},
                  "why": "I have the order number; I will look up the order."}
        refund = {"tool": "issue_refund", "args": {"order_id": order_id, "amount": order["total"]}}
        damaged = f"I'm sorry your {item} arrived damaged."
        photo = "I'm sorry for the trouble with your order."
        if family == "damaged_refund":
            refund["why"] = f"The {item} is damaged and the total is {total}; I will refund it."
            return _text(rng, DAMAGED_OPENINGS, item, f"a damaged {item}", damaged, [lookup, refund], [["refund"]],
                         f"You want a full refund of {total} for order {order_id}.",
                         f"I have refunded {total} for order {order_id}. Thank you for your patience.")
        if family == "photo_refund":
            refund["why"] = "The photo shows a crushed box with a crack, so a refund is allowed."
            return _text(rng, PHOTO_OPENINGS, item, "an order photo", photo, [lookup, refund], [["refund"]],
                         f"You want a refund of {total} for order {order_id}.",
                         f"The photo shows the box was damaged, so I have refunded {total} for order {order_id}. "
                         "Thank you for your patience.")
        if family == "photo_deny":
            lookup = dict(lookup, why="I need to check when the order was delivered.")
            return _text(rng, PHOTO_OPENINGS, item, "an order photo", photo, [lookup], [CANNOT],
                         f"You would like a refund for order {order_id}, but accept a clear no.",
                         f"I'm sorry, the photo shows the item is intact and order {order_id} was delivered "
                         f"{order['days']} days ago, past our 30-day window, so I cannot refund it.",
                         forbid=("issue_refund", "create_return"),
                         reply_why="The photo shows an intact box and it is past 30 days; no refund.")
        if family == "return":
            call = {"tool": "create_return", "args": {"order_id": order_id, "reason": "changed mind"},
                    "goal_args": {"order_id": order_id},
                    "why": f"The order is within 30 days; I will start a return for the {item}."}
            return _text(rng, RETURN_OPENINGS, item, f"a {item} return", "Thanks for reaching out. I'm happy to help with your return.",
                         [lookup, call], [["return"]], f"You want to return the {item} from order {order_id}.",
                         f"I have created a return for order {order_id}. The label is in your email. Thank you!",
                         forbid=("issue_refund",))
        if family == "late_delivery":
            call = {"tool": "track_delivery", "args": {"order_id": order_id},
                    "why": "I have the order number; I will track the delivery."}
            return _text(rng, LATE_OPENINGS, item, "a late order", "I'm sorry your order is late.", [call],
                         [[order["eta"].lower()]], f"You want to know when order {order_id} arrives.",
                         f"Your order {order_id} is on its way and arrives {order['eta']}. Thank you for waiting.",
                         forbid=("issue_refund",))
        call = {"tool": "escalate", "args": {"order_id": order_id, "reason": "refund over cap"},
                "goal_args": {"order_id": order_id}, "why": f"The total {total} is over the $500 cap; I must escalate."}
        return _text(rng, DAMAGED_OPENINGS, item, f"a damaged {item}", damaged, [lookup, call],
                     [["supervisor", "escalat"]], f"You want your {total} back for order {order_id}.",
                     f"Refunds over $500 need a supervisor, so I have escalated order {order_id}. "
                     "They will contact you within a day. Thank you!", forbid=("issue_refund",))


def _text(rng: random.Random, openings: tuple[str, ...], item: str, topic: str, opener: str,
          calls: list[dict[str, Any]], say: list[list[str]], description: str, reply: str, **extra: Any) -> dict[str, Any]:
    return scenario_text(opening=rng.choice(openings).format(item=item), topic=topic, opener=opener,
                         ask_why=f"The user needs help with {topic}; I need the order number.", calls=calls,
                         say=say, description=description, reply=reply, **extra)
