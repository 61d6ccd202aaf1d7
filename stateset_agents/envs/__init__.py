"""Environments: the protocol, the scenario-driven task environment, simulated users, tools."""

from stateset_agents.envs.base import END_REASONS, Environment, StepResult
from stateset_agents.envs.facts import COMMON_FACTS, FactSpec
from stateset_agents.core.formats.hermes import parse_generic_tool_calls
from stateset_agents.envs.llm_user import LLMUserSimulator
from stateset_agents.envs.task_env import TaskEnvironment
from stateset_agents.envs.tools import Tool, ToolError, ToolOutcome, ToolSet
from stateset_agents.envs.users import RuleBasedUser, UserContext, UserReply, UserSimulator

__all__ = [
    "END_REASONS", "Environment", "StepResult", "COMMON_FACTS", "FactSpec", "parse_generic_tool_calls",
    "LLMUserSimulator", "TaskEnvironment", "Tool", "ToolError", "ToolOutcome", "ToolSet",
    "RuleBasedUser", "UserContext", "UserReply", "UserSimulator",
]
