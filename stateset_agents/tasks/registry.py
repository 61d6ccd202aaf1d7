"""Task registry: built-in tasks by name, `register_task` for your own, and file domains by path
(`get_task("examples/domains/telecom_billing")`, see `tasks.file_domain`)."""

from __future__ import annotations

from stateset_agents.tasks.base import Task
from stateset_agents.tasks.claims_desk import ClaimsDeskTask
from stateset_agents.tasks.customer_service import CustomerServiceTask
from stateset_agents.tasks.partner_orders import PartnerOrdersTask
from stateset_agents.tasks.sales import SalesTask
from stateset_agents.tasks.technical_support import TechnicalSupportTask

__all__ = ["UnknownTaskError", "get_task", "list_tasks", "register_task", "TASK_SEQUENCES", "WARM_START_TASKS"]

_TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (CustomerServiceTask, TechnicalSupportTask, SalesTask,
                                                           ClaimsDeskTask, PartnerOrdersTask)}
# The tasks the embedded model's tokenizer and warm start learn from (a fixed list: registering a task does
# not change the embedded model). The claims desk and partner orders are left out on purpose: their policy is
# learned by RL.
WARM_START_TASKS = ("customer_service", "sales", "technical_support")
# Built-in task sequences for continual learning: `task: continual_two_stores` trains them in order.
TASK_SEQUENCES: dict[str, tuple[str, ...]] = {
    # the same customers and tools, two stores whose policies conflict (tasks.claims_desk)
    "continual_two_stores": ("customer_service", "customer_service_claims"),
    # the same prompt and tools; only the order lookup says a partner sold it (tasks.partner_orders)
    "continual_two_sellers": ("customer_service", "customer_service_partner"),
}
_INSTANCES: dict[str, Task] = {}


class UnknownTaskError(ValueError):
    """No task is registered under the requested name."""


def register_task(cls: type[Task]) -> type[Task]:
    """Make a Task subclass available to `get_task` by its `name` (usable as a decorator)."""
    _TASKS[cls.name] = cls
    _INSTANCES.pop(cls.name, None)
    return cls


def list_tasks() -> list[str]:
    """Names of the registered tasks, sorted."""
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    """The task called `name` (one shared instance per name; tasks hold no episode state), or the file
    domain at the path `name` (loaded and validated on each call, so edits to its files count)."""
    if name not in _TASKS:
        from stateset_agents.tasks.file_domain import is_domain_path, load_domain

        if is_domain_path(name):
            return load_domain(name)
        raise UnknownTaskError(f"unknown task {name!r}; valid tasks: {', '.join(list_tasks())}, or the path of a "
                               f"file domain (a directory with domain.yaml; register a Task subclass with "
                               f"stateset_agents.tasks.registry.register_task)")
    if name not in _INSTANCES:
        _INSTANCES[name] = _TASKS[name]()
    return _INSTANCES[name]
