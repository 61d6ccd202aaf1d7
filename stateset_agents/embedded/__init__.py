"""Embedded models: names that resolve to locally built model directories.

`tiny-kimi-k2.5-base` (random init) and `tiny-kimi-k2.5` (warm-started on task dialogues) are
built on first use into `$STATESET_AGENTS_CACHE/models/NAME` (default `~/.cache/stateset_agents`)
and reused while their build fingerprint matches. Builds go to a temporary directory that is
renamed into place, under a file lock, so concurrent or interrupted builds never leave a
half-written model behind.

This package sits above every other layer: a build needs the model builder (`models.tiny_kimi`),
the tasks (the tokenizer corpus, `embedded.tokenizer_corpus`) and the trainer's warm start
(`training.warm_start`). It registers its names with `models.embedded_names`, through which
`models.loading` resolves them without importing upward; `import stateset_agents` does that.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from stateset_agents.embedded.shipped import MANIFEST, usable_shipped_copy
from stateset_agents.models.embedded_names import is_embedded, register_embedded_model

BUILD_INFO = "build_info.json"
CACHE_ENV = "STATESET_AGENTS_CACHE"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    fingerprint: Callable[[], str]
    build: Callable[[Path], None]
    # digest of exactly what the build consumes (slower than `fingerprint`; lets a shipped copy outlive
    # edits of code that the fingerprint covers but that do not change the build's inputs)
    inputs_digest: Callable[[], str] | None = None


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "stateset_agents"
    return Path(root)


def tasks_digest(tasks_dir: Path | None = None) -> str:
    """Digest of the task package: its code (without docstrings and comments) and its data. The
    tokenizer corpus and the warm-start dialogues come from it."""
    from stateset_agents.models.fingerprint import directory_digest

    return directory_digest(tasks_dir or Path(__file__).resolve().parent.parent / "tasks")


def base_sources() -> list[Path]:
    """The code that builds the base model: the model builder, the tokenizer corpus, and the Kimi chat
    format (its template is the tokenizer's, and it renders the corpus's dialogues)."""
    from stateset_agents.core.formats import kimi, kimi_tools
    from stateset_agents.embedded import tokenizer_corpus
    from stateset_agents.models import tiny_kimi

    return [Path(tiny_kimi.__file__), Path(tokenizer_corpus.__file__), Path(kimi.__file__), Path(kimi_tools.__file__)]


def _base_fingerprint() -> str:
    """Spec, build code (`base_sources()`, without docstrings and comments) and task package."""
    from stateset_agents.models import tiny_kimi
    from stateset_agents.models.fingerprint import code_digest

    code = code_digest(base_sources())
    return f"base-v2|{tiny_kimi.TinyKimiSpec().fingerprint()}|code:{code}|tasks:{tasks_digest()}"


def build_base(directory: Path, spec=None) -> Path:
    """Build the base tiny Kimi-K2.5 (spec default `TinyKimiSpec()`) with its tokenizer trained on the
    tasks' dialogues."""
    from stateset_agents.embedded.tokenizer_corpus import default_tokenizer_corpus, tool_argument_words
    from stateset_agents.models.tiny_kimi import TinyKimiSpec, build_tiny_kimi

    return build_tiny_kimi(directory, default_tokenizer_corpus(), tool_argument_words(), spec or TinyKimiSpec())


def _warm_fingerprint() -> str:
    from stateset_agents.training.warm_start import warm_start_fingerprint

    return f"{_base_fingerprint()}|{warm_start_fingerprint()}"


def _warm_inputs_digest() -> str:
    from stateset_agents.training.warm_start import prepare_warm_start, warm_start_inputs_digest

    return warm_start_inputs_digest(prepare_warm_start(ensure_embedded_model("tiny-kimi-k2.5-base")))


def _build_warm(directory: Path) -> None:
    from stateset_agents.training.warm_start import build_warm_started

    build_warm_started(base_dir=ensure_embedded_model("tiny-kimi-k2.5-base"), output_dir=directory)


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "tiny-kimi-k2.5-base": EmbeddedModel(
        "tiny-kimi-k2.5-base", "tiny Kimi-K2.5, random init (seconds to build)", _base_fingerprint, build_base
    ),
    "tiny-kimi-k2.5": EmbeddedModel(
        "tiny-kimi-k2.5", "tiny Kimi-K2.5 warm-started on task dialogues (minutes to build)",
        _warm_fingerprint, _build_warm, _warm_inputs_digest,
    ),
}


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_current(directory: Path, fingerprint: str) -> bool:
    info = directory / BUILD_INFO
    return info.exists() and json.loads(info.read_text()).get("fingerprint") == fingerprint


def ensure_embedded_model(name: str, *, log: Callable[[str], None] = print) -> Path:
    """Path to the embedded model `name`, building it first if missing or stale."""
    if name not in EMBEDDED_MODELS:
        raise KeyError(f"unknown embedded model {name!r}; available: {', '.join(EMBEDDED_MODELS)}")
    entry = EMBEDDED_MODELS[name]
    target = cache_dir() / "models" / name
    fingerprint = entry.fingerprint()
    if _is_current(target, fingerprint):
        return target
    with _file_lock(cache_dir() / "models" / f".{name}.lock"):
        if _is_current(target, fingerprint):  # another process built it while we waited
            return target
        shipped = usable_shipped_copy(name, fingerprint, inputs_digest=entry.inputs_digest, log=log)
        started = time.perf_counter()
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        try:
            if shipped is not None:
                log(f"Installing the shipped {name} into {target}")
                for path in shipped.iterdir():
                    if path.is_file() and path.name != MANIFEST:
                        shutil.copy2(path, staging / path.name)
            else:
                log(f"Building {name} ({entry.description}) into {target} ...")
                entry.build(staging)
            seconds = time.perf_counter() - started
            (staging / BUILD_INFO).write_text(json.dumps({"fingerprint": fingerprint, "build_seconds": seconds,
                                                          "shipped": shipped is not None}))
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log(f"{'Installed' if shipped is not None else 'Built'} {name} in {seconds:.1f}s")
    return target


for _name in EMBEDDED_MODELS:
    register_embedded_model(_name, ensure_embedded_model)
