"""Tasks: customer service, technical support and sales, with scenario data and scripted agents."""

from stateset_agents.tasks.base import Task
from stateset_agents.tasks.registry import get_task, list_tasks, register_task
from stateset_agents.tasks.scenarios import ScenarioError, load_scenarios

__all__ = ["Task", "get_task", "list_tasks", "register_task", "ScenarioError", "load_scenarios"]
