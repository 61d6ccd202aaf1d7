"""Warm-started weights shipped inside the package, so a fresh install skips a build of many minutes.

`embedded/shipped/<name>/` is an ordinary model directory plus `shipped.json`: the build
fingerprint it was made from (`embedded._warm_fingerprint`, the same key the cache uses) and the
sha256 of every file. `ensure_embedded_model` installs it into the cache only when that fingerprint
equals the current code's and every file hashes as recorded; otherwise it builds as before and
says why. Set `STATESET_AGENTS_NO_SHIPPED=1` to always build (the tests do: they build their own).

The shipped copy is reproducible: `stateset-agents build-tiny-model --ship` rebuilds it from
nothing (a fresh cache: base model, tokenizer, warm start) and writes it here;
`--verify-shipped` rebuilds it the same way and compares every tensor bit for bit; `--restamp`
records the current code's fingerprint in the manifest after checking that the build's inputs are
unchanged (after an edit that does not change what the build trains on: it saves every later load
the minutes-long inputs check). The warm
start pins torch's thread count (`training.warm_start.BUILD_THREADS`), because a reduction split
over a different number of threads can round differently.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

SHIPPED_ROOT = Path(__file__).resolve().parent / "shipped"
MANIFEST = "shipped.json"
NO_SHIPPED_ENV = "STATESET_AGENTS_NO_SHIPPED"

__all__ = ["SHIPPED_ROOT", "MANIFEST", "shipped_directory", "usable_shipped_copy", "write_shipped_copy",
           "compare_model_directories", "rebuild_from_scratch", "ship", "verify", "restamp"]


def shipped_directory(name: str, root: Path | None = None) -> Path:
    return Path(root or SHIPPED_ROOT) / name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.iterdir() if path.is_file() and path.name != MANIFEST)


def usable_shipped_copy(name: str, fingerprint: str, *, inputs_digest: Callable[[], str] | None = None,
                        root: Path | None = None, log: Callable[[str], None] = print) -> Path | None:
    """The shipped directory of `name` when it is intact and was built from `fingerprint`, or (when the
    fingerprint differs) from the same inputs, `inputs_digest()`; else None, with the reason logged
    (nothing is logged when nothing is shipped for `name` or shipping is switched off)."""
    if os.environ.get(NO_SHIPPED_ENV, "") not in ("", "0"):
        return None
    directory = shipped_directory(name, root)
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        return None
    manifest = json.loads(manifest_path.read_text())
    files = manifest.get("files", {})
    present = {path.name for path in _model_files(directory)}
    if set(files) != present:
        log(f"The shipped {name} is incomplete or has extra files ({sorted(set(files) ^ present)}); building instead.")
        return None
    for file_name, digest in files.items():
        if _sha256(directory / file_name) != digest:
            log(f"The shipped {name} is damaged ({file_name} does not match its sha256); building instead.")
            return None
    if manifest.get("fingerprint") == fingerprint:
        return directory
    if inputs_digest is not None and manifest.get("inputs_digest"):
        log(f"This checkout's code differs from the shipped {name}'s; checking whether the build's inputs do ...")
        if inputs_digest() == manifest["inputs_digest"]:
            log(f"Same inputs (base weights, tokenizer, every training example, settings, code of the step): "
                f"the shipped {name} is what a build would give.")
            return directory
    log(f"The shipped {name} was built from other code or settings than this checkout's, so it is built here "
        f"instead. Maintainers: refresh it with `stateset-agents build-tiny-model --ship`.")
    return None


def _write_manifest(path: Path, manifest: dict) -> None:
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def write_shipped_copy(name: str, model_dir: Path, fingerprint: str, *, root: Path | None = None,
                       extra: dict | None = None) -> Path:
    """Replace the shipped copy of `name` with the model directory `model_dir`, built from `fingerprint`."""
    target = shipped_directory(name, root)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent if target.parent.exists() else None))
    try:
        for path in _model_files(Path(model_dir)):
            if path.name != "build_info.json":  # the cache's own record; the manifest replaces it
                shutil.copy2(path, staging / path.name)
        manifest = {"fingerprint": fingerprint, "files": {p.name: _sha256(p) for p in _model_files(staging)},
                    **(extra or {})}
        _write_manifest(staging / MANIFEST, manifest)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(staging), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def compare_model_directories(expected: Path, actual: Path) -> list[str]:
    """Differences between two model directories: every safetensors tensor bit for bit, every other
    file (tokenizer, config) byte for byte. Empty when identical."""
    from safetensors.torch import load_file

    problems = []
    names = {p.name for p in _model_files(Path(expected))} | {p.name for p in _model_files(Path(actual))}
    for file_name in sorted(names - {"build_info.json", "warm_start.json"}):
        left, right = Path(expected) / file_name, Path(actual) / file_name
        if not left.exists() or not right.exists():
            problems.append(f"{file_name}: only in {'the rebuild' if right.exists() else 'the shipped copy'}")
        elif file_name.endswith(".safetensors"):
            a, b = load_file(left), load_file(right)
            if a.keys() != b.keys():
                problems.append(f"{file_name}: tensor names differ ({sorted(a.keys() ^ b.keys())[:5]})")
            for key in sorted(a.keys() & b.keys()):
                if a[key].dtype != b[key].dtype or a[key].shape != b[key].shape:
                    problems.append(f"{file_name}:{key}: dtype/shape differ")
                elif not _same_bits(a[key], b[key]):
                    problems.append(f"{file_name}:{key}: values differ (max |diff| "
                                    f"{(a[key].float() - b[key].float()).abs().max().item():.3g})")
        elif _comparable(left) != _comparable(right):
            problems.append(f"{file_name}: contents differ")
    return problems


# saved by transformers from how the files were loaded (HF_HUB_OFFLINE at build time), not part of the model
ENVIRONMENT_KEYS = ("local_files_only",)


def _comparable(path: Path) -> object:
    """A file's contents for comparison: JSON without `ENVIRONMENT_KEYS` at its top level, other files as bytes."""
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if key not in ENVIRONMENT_KEYS}
        return data
    return path.read_bytes()


def _same_bits(a, b) -> bool:
    """Bitwise equality (NaN payloads and signed zeros included)."""
    import torch

    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return bool((a.contiguous().view(width) == b.contiguous().view(width)).all())


def rebuild_from_scratch(name: str, log: Callable[[str], None] = print) -> tuple[Path, str, Path]:
    """Build `name` (and everything under it) in a fresh, temporary cache, ignoring any shipped copy.
    Returns (model directory, fingerprint, temporary cache root: the caller deletes it)."""
    from stateset_agents.embedded import CACHE_ENV, EMBEDDED_MODELS, ensure_embedded_model

    scratch = Path(tempfile.mkdtemp(prefix="stateset-rebuild-"))
    saved = {key: os.environ.get(key) for key in (CACHE_ENV, NO_SHIPPED_ENV)}
    os.environ[CACHE_ENV], os.environ[NO_SHIPPED_ENV] = str(scratch), "1"
    try:
        directory = ensure_embedded_model(name, log=log)
        fingerprint = EMBEDDED_MODELS[name].fingerprint()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return directory, fingerprint, scratch


def _build_record(model_dir: Path) -> dict:
    """What the manifest keeps about a build: its inputs digest and how it was made."""
    import platform

    import torch

    from stateset_agents.training.warm_start import BUILD_THREADS

    report_path = Path(model_dir) / "warm_start.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return {"inputs_digest": report.get("inputs_digest"), "torch": torch.__version__,
            "build_threads": BUILD_THREADS, "machine": platform.machine(),
            "build_seconds": round(report.get("seconds", 0.0), 1)}


def ship(name: str, *, root: Path | None = None, log: Callable[[str], None] = print,
         resume_after: str | None = None, resume_from: Path | None = None) -> Path:
    """Rebuild `name` from nothing and make it the shipped copy. With `resume_after` and `resume_from` (the
    warm-started model only): a directory holding the model after the warm start's stages up to that one
    (`training.warm_start.RESUME_POINTS`; e.g. the previous shipped copy, when only later stages changed);
    only the later stages run on it, which gives the full build's weights bit for bit
    (`training.warm_start.build_warm_started`)."""
    if resume_from is None:
        model_dir, fingerprint, scratch = rebuild_from_scratch(name, log)
    else:
        model_dir, fingerprint, scratch = _later_stages_only(name, log, resume_after, Path(resume_from))
    try:
        extra = {**_build_record(model_dir), "resumed_after": resume_after}
        target = write_shipped_copy(name, model_dir, fingerprint, root=root, extra=extra)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log(f"Shipped {name}: {target}")
    return target


def _later_stages_only(name: str, log: Callable[[str], None], resume_after: str | None,
                       resume_from: Path) -> tuple[Path, str, Path]:
    from stateset_agents.embedded import EMBEDDED_MODELS, ensure_embedded_model
    from stateset_agents.training.warm_start import build_warm_started

    if name != "tiny-kimi-k2.5":
        raise ValueError(f"resuming after a stage applies to tiny-kimi-k2.5's warm start, not {name!r}")
    scratch = Path(tempfile.mkdtemp(prefix="stateset-late-stages-"))
    model_dir = build_warm_started(ensure_embedded_model("tiny-kimi-k2.5-base", log=log), scratch / name, log=log,
                                   resume_after=resume_after, resume_from=resume_from)
    return model_dir, EMBEDDED_MODELS[name].fingerprint(), scratch


def verify(name: str, *, root: Path | None = None, log: Callable[[str], None] = print) -> list[str]:
    """Rebuild `name` from nothing and compare it with the shipped copy; the differences (none: identical)."""
    directory = shipped_directory(name, root)
    if not (directory / MANIFEST).exists():
        return [f"nothing is shipped for {name} in {directory}"]
    manifest = json.loads((directory / MANIFEST).read_text())
    model_dir, fingerprint, scratch = rebuild_from_scratch(name, log)
    try:
        problems = compare_model_directories(directory, model_dir)
        rebuilt_inputs = _build_record(model_dir)["inputs_digest"]
        if manifest.get("inputs_digest") and rebuilt_inputs != manifest["inputs_digest"]:
            problems.append("the build's inputs digest differs from the shipped one's")
        if manifest.get("fingerprint") != fingerprint:
            log("note: the code fingerprint differs from the shipped one's (code was edited since it was shipped)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return problems


def restamp(name: str, *, root: Path | None = None, log: Callable[[str], None] = print) -> bool:
    """Record this checkout's fingerprint of `name` in the shipped manifest when the build's inputs digest
    still equals the shipped one's (the copy is then what a build here gives); True when the manifest is
    current afterwards. The inputs check runs once here instead of at every load of a fresh install."""
    from stateset_agents.embedded import EMBEDDED_MODELS

    entry = EMBEDDED_MODELS[name]
    manifest_path = shipped_directory(name, root) / MANIFEST
    if not manifest_path.exists():
        log(f"nothing is shipped for {name} in {manifest_path.parent}")
        return False
    manifest = json.loads(manifest_path.read_text())
    fingerprint = entry.fingerprint()
    if manifest.get("fingerprint") == fingerprint:
        log(f"The shipped {name} already carries this checkout's fingerprint.")
        return True
    if entry.inputs_digest is None or not manifest.get("inputs_digest"):
        log(f"{name} has no inputs digest to check; rebuild it with `stateset-agents build-tiny-model --ship`.")
        return False
    log(f"Checking that the build's inputs are the shipped {name}'s (a few minutes) ...")
    if entry.inputs_digest() != manifest["inputs_digest"]:
        log(f"The build's inputs changed: the shipped {name} is stale. Rebuild it with "
            f"`stateset-agents build-tiny-model --ship`.")
        return False
    manifest["fingerprint"] = fingerprint
    _write_manifest(manifest_path, manifest)
    log(f"Same inputs: the manifest of the shipped {name} now carries this checkout's fingerprint.")
    return True
