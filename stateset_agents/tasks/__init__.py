"""Tasks: customer service, technical support and sales, with scenario data and scripted agents."""

from stateset_agents.tasks.base import Task
from stateset_agents.tasks.episodes import generate_reference_dialogues, run_scripted_episode
from stateset_agents.tasks.registry import get_task, list_tasks, register_task
from stateset_agents.tasks.scenario_records import ScenarioError, load_scenarios
from stateset_agents.tasks.scripted_agents import AGENTS, make_agent

__all__ = ["Task", "get_task", "list_tasks", "register_task", "ScenarioError", "load_scenarios", "AGENTS", "make_agent",
           "run_scripted_episode", "generate_reference_dialogues"]
