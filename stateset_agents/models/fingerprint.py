"""Digests of source files and data that ignore what cannot change a built model's weights.

A Python file is digested through its syntax tree with every bare string statement (docstrings,
wherever they stand) removed; comments and formatting are not part of the tree. So editing a
docstring, a comment or the layout keeps the digest, while any change to code (a name, a
constant, a statement) alters it. Other files (data) are digested byte for byte.

The tree's text form (`ast.dump`) may differ between Python versions, so a new Python version
can change a digest once.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Iterable

__all__ = ["normalized_python", "file_digest", "code_digest", "directory_digest"]


def _is_bare_string(node: ast.AST) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


class _DropBareStrings(ast.NodeTransformer):
    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            statements = getattr(node, field, None)
            if isinstance(statements, list) and statements and isinstance(statements[0], ast.stmt):
                setattr(node, field, [statement for statement in statements if not _is_bare_string(statement)])
        return node


def normalized_python(source: str | bytes) -> str:
    """The code of a Python module without docstrings, comments or formatting, as text."""
    tree = _DropBareStrings().visit(ast.parse(source))
    return ast.dump(tree, annotate_fields=True, include_attributes=False)


def file_digest(path: Path) -> bytes:
    """Normalized code for a `.py` file, the raw bytes for anything else."""
    path = Path(path)
    if path.suffix == ".py":
        return normalized_python(path.read_bytes()).encode()
    return path.read_bytes()


def code_digest(paths: Iterable[Path], names: Iterable[str] | None = None) -> str:
    """16-hex-digit digest of the files `paths` (in the order given), each under its name in `names`
    (default: the file name)."""
    paths = [Path(path) for path in paths]
    names = list(names) if names is not None else [path.name for path in paths]
    digest = hashlib.sha256()
    for name, path in zip(names, paths, strict=True):
        digest.update(name.encode() + b"\0")
        content = file_digest(path)
        digest.update(len(content).to_bytes(8, "little") + content)
    return digest.hexdigest()[:16]


def directory_digest(directory: Path) -> str:
    """`code_digest` of every file under `directory` (sorted, named by relative path; caches skipped)."""
    directory = Path(directory)
    paths = [path for path in sorted(directory.rglob("*"))
             if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"]
    return code_digest(paths, [path.relative_to(directory).as_posix() for path in paths])
