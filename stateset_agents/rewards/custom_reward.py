"""Your own reward, named in the config: ``reward: my_rewards:KimiReward`` (``--reward my_rewards:KimiReward``).

`load_reward("module:Name", task)` imports `module` (a dotted module on the Python path or in the
current directory, or a ``path/to/file.py``) and takes `Name` from it (dots reach nested attributes):

- a class is instantiated with no arguments when its constructor allows it (the guide's
  ``class KimiReward(MultiObjectiveReward)`` does), else with the task as its one argument;
- anything else callable (a function ``trajectory -> reward``) is used as it is.

The result must have ``compute_reward(trajectory)`` or be callable (see rewards/base.py for what it
may return). Every failure is a `RewardLoadError` naming the module, the name and what went wrong.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["RewardLoadError", "load_reward", "REWARD_SPEC_PATTERN"]

REWARD_SPEC_PATTERN = r"^[^:\s]+:[A-Za-z_][\w.]*$"


class RewardLoadError(ValueError):
    """A `module:Name` reward could not be loaded; says which part failed and why."""


def load_reward(spec: str, task: Any = None) -> Any:
    """The reward object `spec` names (module docstring)."""
    if not re.match(REWARD_SPEC_PATTERN, spec or ""):
        raise RewardLoadError(f"reward {spec!r} must read 'module:Name' (e.g. my_rewards:KimiReward or "
                              f"path/to/rewards.py:KimiReward)")
    module_name, attribute = spec.split(":", 1)
    module = _import(module_name, spec)
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = sorted(n for n in dir(target) if not n.startswith("_"))
            raise RewardLoadError(f"reward {spec!r}: {module_name} has no attribute {attribute!r} "
                                  f"(it has: {', '.join(public[:20]) or 'nothing public'})")
        target = getattr(target, part)
    reward = _instantiate(target, task, spec) if inspect.isclass(target) else target
    if not (callable(getattr(reward, "compute_reward", None)) or callable(reward)):
        raise RewardLoadError(f"reward {spec!r} is a {type(reward).__name__}: a reward needs "
                              f"compute_reward(trajectory) or to be callable")
    return reward


def _import(module_name: str, spec: str):
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise RewardLoadError(f"reward {spec!r}: {path} is not a file")
        loader_spec = importlib.util.spec_from_file_location(f"_stateset_reward_{path.stem}", path)
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except Exception as error:
            raise RewardLoadError(f"reward {spec!r}: importing {path} failed: "
                                  f"{type(error).__name__}: {error}") from error
        return module
    try:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # a module next to the user's config (the console script's path does not hold the current directory)
            if error.name != module_name.split(".")[0] or str(Path.cwd()) in sys.path:
                raise
            sys.path.append(str(Path.cwd()))
            return importlib.import_module(module_name)
    except Exception as error:
        raise RewardLoadError(f"reward {spec!r}: cannot import module {module_name!r}: "
                              f"{type(error).__name__}: {error}") from error


def _instantiate(cls: type, task: Any, spec: str) -> Any:
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        signature = None
    attempts = [()] if signature is None else [args for args in [(), (task,)] if _binds(signature, args)]
    if not attempts:
        raise RewardLoadError(f"reward {spec!r}: {cls.__name__}{signature} takes neither no arguments nor the "
                              f"task alone; give it defaults, or wrap it in a function")
    try:
        return cls(*attempts[0])
    except Exception as error:
        raise RewardLoadError(f"reward {spec!r}: {cls.__name__}({'task' if attempts[0] else ''}) raised "
                              f"{type(error).__name__}: {error}") from error


def _binds(signature: inspect.Signature, args: tuple) -> bool:
    try:
        signature.bind(*args)
    except TypeError:
        return False
    return True
