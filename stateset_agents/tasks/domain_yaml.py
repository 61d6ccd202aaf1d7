"""Reading ``domain.yaml`` with the line of every field, and errors that name file, line and field.

PyYAML's composed nodes carry marks; `load_yaml_document` builds the plain Python value and, next
to it, a map from each field's path (``("tools", 1, "steps", 0, "check")``) to its line, so any
later check can say ``domain.yaml line 14: tools[1].steps[0].check: ...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stateset_agents.tasks.registry import UnknownTaskError

__all__ = ["DomainError", "YamlDocument", "field_path", "load_yaml_document"]

Path_ = tuple[str | int, ...]


class DomainError(UnknownTaskError):
    """A file domain cannot be loaded; the message names the file, the line and the field.

    A subclass of `UnknownTaskError`, so every command that reports a bad ``--task`` reports a
    broken domain the same way (one ``error:`` line)."""


def field_path(path: Path_) -> str:
    """``("tools", 1, "steps", 0, "check")`` -> ``tools[1].steps[0].check``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@dataclass
class YamlDocument:
    """A loaded YAML file: its value, the line of each field, and the label errors show."""

    data: Any
    lines: dict[Path_, int]
    file: str

    def line(self, path: Path_) -> int:
        """The line of `path`, or of its nearest ancestor present in the file (missing fields)."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 1

    def error(self, path: Path_, problem: str) -> DomainError:
        where = f"{field_path(path)}: " if path else ""
        return DomainError(f"{self.file} line {self.line(path)}: {where}{problem}")


def load_yaml_document(path: Path, label: str) -> YamlDocument:
    """Parse `path` (shown as `label` in errors); `DomainError` on invalid YAML or duplicate keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DomainError(f"{label}: cannot read it: {exc.strerror or exc}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DomainError(f"{label}{where}: invalid YAML: {problem}") from None
    if root is None:
        raise DomainError(f"{label} line 1: the file is empty; a domain needs at least name, system_prompt and tools")
    lines: dict[Path_, int] = {(): root.start_mark.line + 1}
    data = _build(root, (), lines, label, yaml.SafeLoader(""))
    return YamlDocument(data, lines, label)


def _build(node: yaml.Node, path: Path_, lines: dict[Path_, int], label: str, loader: yaml.SafeLoader) -> Any:
    """The Python value of `node`, recording the line of every mapping key and list item."""
    if isinstance(node, yaml.MappingNode):
        value: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise DomainError(f"{label} line {key_node.start_mark.line + 1}: YAML merge keys (<<) are not "
                                  f"supported in domain files; write the fields out")
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                raise DomainError(f"{label} line {key_node.start_mark.line + 1}: keys must be plain text")
            if key in value:
                raise DomainError(f"{label} line {key_node.start_mark.line + 1}: {field_path((*path, key))}: "
                                  f"duplicate key {key!r} (first at line {lines[(*path, key)]})")
            lines[(*path, key)] = key_node.start_mark.line + 1
            value[key] = _build(value_node, (*path, key), lines, label, loader)
        return value
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            items.append(_build(item, (*path, index), lines, label, loader))
        return items
    return loader.construct_object(node, deep=True)
