"""Customer service at a marketplace desk: the same customers, orders and tools as `customer_service`,
but another store's policy, so the right action differs on the same request.

ShopCo's own desk (`customer_service`) refunds damaged items, starts returns and escalates only
refunds over $500. The marketplace desk may not refund or return anything itself: every refund or
return request (damaged, photo, change of mind, over the cap) goes to the claims team with
`escalate`; late deliveries are tracked as at ShopCo. Same openings, same worlds, same tools: only
the system prompt says which store this is. Trained one after the other, the two tasks pull the
policy in opposite directions on four of six families - the pair `continual_two_stores` (in
`tasks.registry.TASK_SEQUENCES`) measures forgetting and what `replay_lwf` keeps (experiments/FORGETTING.md).
"""

from __future__ import annotations

import random
from typing import Any

from stateset_agents.tasks.base import money
from stateset_agents.tasks.customer_service import CustomerServiceTask, _text

__all__ = ["ClaimsDeskTask"]


class ClaimsDeskTask(CustomerServiceTask):
    """ShopCo's marketplace desk: refunds and returns go to the claims team (`escalate`)."""

    name = "customer_service_claims"
    id_prefix = "cc"
    system_prompt = (
        "You are a customer service agent for the ShopCo marketplace. Ask for the order number, look up the "
        "order, then use the tools to fix the problem. Rules: you may not refund or return anything yourself; "
        "every refund or return request goes to the claims team with escalate. Be polite and brief, and tell "
        "the customer what you did.")

    def _family_text(self, rng: random.Random, family: str, item: str, order_id: str,
                     order: dict[str, Any]) -> dict[str, Any]:
        shop = super()._family_text(rng, family, item, order_id, order)
        if family == "late_delivery":
            return shop
        lookup = {"tool": "lookup_order", "args": {"order_id": order_id},
                  "why": "I have the order number; I will look up the order."}
        request = "return" if family == "return" else "refund"
        call = {"tool": "escalate", "args": {"order_id": order_id, "reason": f"{request} claim"},
                "goal_args": {"order_id": order_id},
                "why": f"A {request} request goes to the claims team; I will escalate order {order_id}."}
        return _text(rng, (shop["opening"],), item, shop["topic"], shop["solution"]["opener"],
                     [lookup, call], [["claims"]],
                     f"You want a {request} for order {order_id} ({money(order['total'])}).",
                     f"I have sent order {order_id} to our claims team; they will contact you about your {request} "
                     "within a day. Thank you!", forbid=("issue_refund", "create_return"))
