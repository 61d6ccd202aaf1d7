"""Model names that a higher layer builds on demand (the embedded models), as `models.loading` sees them.

The models layer loads weights; it does not know how an embedded model is built (that needs the
tasks and the warm start, which sit above it). `stateset_agents.embedded` registers each embedded
name here with a function that returns its built directory, and `models.loading` resolves names
through this table. Importing the package (`import stateset_agents`) registers them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

__all__ = ["register_embedded_model", "is_embedded", "embedded_model_path"]

_EMBEDDED: dict[str, Callable[[str], Path]] = {}


def register_embedded_model(name: str, ensure: Callable[[str], Path]) -> None:
    """Make `name` resolve to ``ensure(name)`` (a directory holding the built model)."""
    _EMBEDDED[name] = ensure


def is_embedded(name: str) -> bool:
    return name in _EMBEDDED


def embedded_model_path(name: str) -> Path:
    """The built directory of the embedded model `name` (building it first when needed)."""
    return _EMBEDDED[name](name)
