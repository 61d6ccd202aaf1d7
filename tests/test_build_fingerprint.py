"""Build fingerprints of the embedded models: docstrings, comments and layout do not count; code,
data and settings do. Works on copies of the real sources, so nothing is built."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from stateset_agents.models import tiny_kimi
from stateset_agents.models.fingerprint import code_digest, normalized_python
from stateset_agents.embedded import _base_fingerprint, _warm_fingerprint, base_sources, tasks_digest
from stateset_agents.embedded import tokenizer_corpus
from stateset_agents.training import warm_start
from stateset_agents.training.warm_start import WarmStartSettings, warm_start_fingerprint, warm_start_sources

PACKAGE = Path(tiny_kimi.__file__).resolve().parent.parent


def _copy_sources(tmp_path: Path) -> list[Path]:
    copies = []
    for index, path in enumerate(warm_start_sources()):
        target = tmp_path / str(index) / path.name
        target.parent.mkdir(parents=True)
        shutil.copy(path, target)
        copies.append(target)
    return copies


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_default_sources_are_the_warm_start_module_and_copy_drills(tmp_path):
    assert warm_start_fingerprint() == warm_start_fingerprint(sources=_copy_sources(tmp_path))


def test_warm_start_docstring_and_comment_edits_keep_the_key(tmp_path):
    sources = _copy_sources(tmp_path)
    before = warm_start_fingerprint(sources=sources)
    module = sources[0]
    _edit(module, '"""Supervised warm start', '"""A rewritten module docstring.\n\nSupervised warm start')
    _edit(module, "class WarmStartSettings:\n", 'class WarmStartSettings:\n    """Only this docstring now."""\n')
    _edit(module, "    seed: int = 0\n", "    seed: int = 0  # a new comment\n    # and a comment line\n")
    _edit(module, "def supervised_epochs(", "# comment before a function\ndef supervised_epochs(")
    _edit(sources[1], '"""Copy drills:', '"""Copy drills (measured numbers moved to the log):')
    assert warm_start_fingerprint(sources=sources) == before


@pytest.mark.parametrize("old, new", [
    ("copy_drills: int = 48_000", "copy_drills: int = 48_001"),  # a default setting
    ("window: int = 8", "window: int = 9"),  # a constant in code
    ("rng.shuffle(batches)", "pass"),  # a statement
])
def test_warm_start_code_edits_change_the_key(tmp_path, old, new):
    sources = _copy_sources(tmp_path)
    before = warm_start_fingerprint(sources=sources)
    _edit(sources[0], old, new)
    assert warm_start_fingerprint(sources=sources) != before


def test_copy_drill_code_edit_changes_the_key(tmp_path):
    sources = _copy_sources(tmp_path)
    before = warm_start_fingerprint(sources=sources)
    _edit(sources[1], 'if kind < 0.3:', 'if kind < 0.31:')
    assert warm_start_fingerprint(sources=sources) != before


def test_warm_start_settings_change_the_key():
    settings = WarmStartSettings()
    assert warm_start_fingerprint(replace(settings, seed=1)) != warm_start_fingerprint(settings)
    assert warm_start_fingerprint(replace(settings, learning_rate=3e-3)) != warm_start_fingerprint(settings)


def test_normalized_python_drops_every_bare_string_and_comment():
    plain = "def f(x):\n    return x + 1\n"
    documented = ('"""Module."""\n# comment\ndef f(x):  # trailing\n    """Doc."""\n\n'
                  '    return (x\n            + 1)\n')
    assert normalized_python(documented) == normalized_python(plain)
    assert normalized_python("def f(x):\n    return x + 2\n") != normalized_python(plain)
    # a string that is used is code, not documentation
    assert normalized_python('X = "a"\n') != normalized_python('X = "b"\n')


def test_non_python_files_count_byte_for_byte(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"a": 1}\n')
    before = code_digest([data])
    data.write_text('{"a": 1} \n')
    assert code_digest([data]) != before


def test_tasks_digest_ignores_docstrings_but_not_code_or_data(tmp_path):
    tasks = tmp_path / "tasks"
    shutil.copytree(PACKAGE / "tasks", tasks, ignore=shutil.ignore_patterns("__pycache__"))
    assert tasks_digest(tasks) == tasks_digest()
    registry = tasks / "registry.py"
    registry.write_text('"""A different module docstring."""\n# and a comment\n' + registry.read_text())
    assert tasks_digest(tasks) == tasks_digest()
    registry.write_text(registry.read_text() + "\nEXTRA = 1\n")
    assert tasks_digest(tasks) != tasks_digest()
    shutil.copy(PACKAGE / "tasks" / "registry.py", registry)
    data = sorted((tasks / "data").glob("*.jsonl"))[0]
    data.write_text(data.read_text() + "\n")
    assert tasks_digest(tasks) != tasks_digest()


def test_base_and_warm_keys_are_stable_and_nested():
    assert _base_fingerprint() == _base_fingerprint()
    assert _warm_fingerprint().startswith(_base_fingerprint() + "|")
    assert warm_start.WARM_START_VERSION and f"code:{code_digest(base_sources())}" in _base_fingerprint()
    # the base model's build code: the model builder, the tokenizer corpus it is given, and the Kimi
    # chat format (the tokenizer's template and the corpus's rendering)
    from stateset_agents.core.formats import kimi, kimi_tools

    assert base_sources() == [Path(tiny_kimi.__file__), Path(tokenizer_corpus.__file__), Path(kimi.__file__),
                              Path(kimi_tools.__file__)]
