"""The package's layers hold: no module imports from a layer above its own.

The layers follow the data path of a training run, lowest first:

    core      messages, chat formats, completions, trajectories: the data every layer passes on
    runs      what a run leaves on disk (checkpoints, metrics, report): the data path's last stage,
              but it needs nothing from the package, so every layer may write through it
    models    loading weights, LoRA targets, vision settings, the tiny model's builder
    envs      the conversation's other side: environments, simulated users, tools, goals
    rollout   the agent (model + chat format) generating turns, prompt encoding, exact logprobs,
              the multi-turn episode runner
    rewards   scoring finished trajectories (they read the environment's goals and users)
    tasks     a scenario set + its environment + its reward, bundled by name (so above rewards)
    training  advantages, losses, the optimizer step, the trainer, checkpoints, metrics, warm start
    top       what puts it all together: the CLI and its subcommands (`commands`: eval, chat), the demo,
              and the embedded model builds
              (`stateset_agents.embedded`: the model builder + the tasks' tokenizer corpus + the
              warm start), plus the package's own `__init__`

Every import counts, including those inside functions and under `if TYPE_CHECKING:` — a hidden
import is still a dependency. A lower layer that needs something from a higher one gets it
passed in (e.g. `models.loading` resolves embedded names through `models.embedded_names`, which
`stateset_agents.embedded` fills in).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stateset_agents

PACKAGE = "stateset_agents"
ROOT = Path(stateset_agents.__file__).resolve().parent

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("core",)),
    ("runs", ("runs",)),
    ("models", ("models",)),
    ("envs", ("envs",)),
    ("rollout", ("rollout",)),
    ("rewards", ("rewards",)),
    ("tasks", ("tasks",)),
    ("training", ("training",)),
    ("top", ("", "cli", "commands", "demo", "embedded", "__main__")),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    """Index in LAYERS of a `stateset_agents...` module; unknown first-level names fail the test."""
    first = module.split(".")[1] if "." in module else ""
    for index, (_, heads) in enumerate(LAYERS):
        if first in heads:
            return index
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS in {__file__}")


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py")) if "__pycache__" not in path.parts}


def imported_modules(path: Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) for every import of the package in `path`, at any depth of the syntax tree."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                candidate = f"{base}.{alias.name}"
                found.append((node.lineno, candidate if candidate in known else base))
    return [(line, name) for line, name in found if name == PACKAGE or name.startswith(PACKAGE + ".")]


def upward_edges() -> list[str]:
    modules = package_modules()
    known = set(modules)
    problems = []
    for module, path in modules.items():
        own = layer_of(module)
        for line, target in imported_modules(path, module, known):
            if layer_of(target) > own:
                problems.append(f"{path.relative_to(ROOT.parent)}:{line}: {module} ({LAYERS[own][0]}) imports "
                                f"{target} ({LAYERS[layer_of(target)][0]})")
    return problems


def test_no_module_imports_from_a_higher_layer():
    problems = upward_edges()
    assert not problems, "imports from a higher layer:\n" + "\n".join(problems)


def test_every_module_is_in_a_layer_and_the_walk_sees_hidden_imports():
    modules = package_modules()
    assert {layer_of(module) for module in modules} == set(range(len(LAYERS)))
    # the walk reads imports inside functions (the embedded builds import the warm start lazily)
    embedded = modules["stateset_agents.embedded"]
    imported = {name for _, name in imported_modules(embedded, "stateset_agents.embedded", set(modules))}
    assert "stateset_agents.training.warm_start" in imported


@pytest.mark.parametrize("source, expected", [
    ("def f():\n    from stateset_agents.training.trainer import GSPOTrainer\n", "training"),
    ("from stateset_agents import embedded\n", "top"),
    ("if True:\n    import stateset_agents.rollout.agent\n", "rollout"),
    ("from ..tasks import registry\n", "tasks"),
])
def test_an_upward_import_is_caught(tmp_path, source, expected):
    path = tmp_path / "probe.py"
    path.write_text(source)
    modules = set(package_modules())
    [(_, target)] = imported_modules(path, "stateset_agents.core.probe", modules)
    assert LAYERS[layer_of(target)][0] == expected and layer_of(target) > layer_of("stateset_agents.core.probe")
