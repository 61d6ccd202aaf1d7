"""The small expression and template language of file domains (``domain.yaml``).

Expressions are a safe subset of Python, parsed once when the domain loads and evaluated by walking
the syntax tree (never `eval`):

- constants (``'delivered'``, ``30``, ``0.005``, ``true``/``True``, ``None``), lists ``[a, b]``;
- names bound in the scope (tool arguments, looked-up records, constants, ledgers, ``world``...);
- fields of records: ``order.total`` (a record is a JSON object; ``order['total']`` works too),
  indexing ``world.orders[order_id]``, ``items[0]``;
- arithmetic ``+ - * / // %``, comparisons ``== != < <= > >= in not in is is not``, chains
  (``0 < amount <= cap``), ``and or not``, ``a if condition else b``;
- calls of the functions in `FUNCTIONS` only (``len(returns)``, ``money(amount)``,
  ``count(refunds, order_id=order_key)``); no methods, comprehensions, lambdas or attributes
  starting with ``_``.

A template is text with ``{expression}`` fields and an optional format spec (``{amount:.2f}``);
``{{`` and ``}}`` are literal braces. A template that is exactly one field keeps the value's type
(``"{amount}"`` is a number), so ledger records and updated fields stay typed.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ExpressionError", "Expression", "Template", "FUNCTIONS", "parse_expression", "parse_template", "money"]


class ExpressionError(ValueError):
    """An expression or template that cannot be parsed, or failed while evaluated."""


def money(amount: float) -> str:
    """``$25.00``."""
    return f"${amount:.2f}"


def _count(items: Any, **where: Any) -> int:
    """How many records (dicts) of `items` have every field equal to `where`'s values."""
    records = items.values() if isinstance(items, Mapping) else items
    return sum(1 for record in records if isinstance(record, Mapping)
               and all(record.get(key) == value for key, value in where.items()))


def _get(mapping: Any, key: Any, default: Any = None) -> Any:
    if not isinstance(mapping, Mapping):
        raise ExpressionError(f"get() needs a record, got {type(mapping).__name__}")
    return mapping.get(key, default)


def _join(items: Any, separator: str = ", ") -> str:
    return separator.join(str(item) for item in items)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len, "str": str, "int": int, "float": float, "round": round, "abs": abs, "min": min, "max": max,
    "sorted": sorted, "lower": lambda text: str(text).lower(), "upper": lambda text: str(text).upper(),
    "strip": lambda text: str(text).strip(), "money": money, "count": _count, "get": _get, "join": _join,
    "keys": lambda mapping: list(mapping), "values": lambda mapping: list(mapping.values()),
}
"""The only callables an expression may use."""

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not}
_UNARY = {ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos}
_YAML_CONSTANTS = {"true": True, "false": False, "null": None}  # YAML spellings, for authors who write them


@dataclass(frozen=True)
class Expression:
    """A parsed expression: `text`, the names it reads, and the record fields it reads by name."""

    text: str
    tree: ast.expr
    names: frozenset[str]
    fields: tuple[tuple[str, str], ...]  # (name, field) for every ``name.field``

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        try:
            return _evaluate(self.tree, scope)
        except ExpressionError:
            raise
        except Exception as exc:  # noqa: BLE001 - a type error in a domain expression, said plainly
            raise ExpressionError(f"{self.text!r}: {type(exc).__name__}: {exc}") from None


def parse_expression(text: str) -> Expression:
    """Parse and check `text`; `ExpressionError` names what is not allowed."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("expected an expression, got an empty value")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"{text!r} is not a valid expression: {exc.msg}") from None
    names: set[str] = set()
    fields: list[tuple[str, str]] = []
    _check(tree, text, names, fields)
    return Expression(text, tree, frozenset(names), tuple(fields))


def _check(node: ast.AST, text: str, names: set[str], fields: list[tuple[str, str]]) -> None:
    """Refuse every node outside the language; collect the names and ``name.field`` reads."""
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            called = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ExpressionError(f"{text!r}: {called}() is not available; functions: {', '.join(FUNCTIONS)}")
        if any(isinstance(arg, ast.Starred) for arg in node.args) or any(kw.arg is None for kw in node.keywords):
            raise ExpressionError(f"{text!r}: *args and **kwargs are not supported")
        for child in [*node.args, *(kw.value for kw in node.keywords)]:
            _check(child, text, names, fields)
        return
    if isinstance(node, ast.Name):
        if node.id not in _YAML_CONSTANTS:
            names.add(node.id)
        return
    if isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise ExpressionError(f"{text!r}: fields starting with '_' are not readable")
        if isinstance(node.value, ast.Name):
            fields.append((node.value.id, node.attr))
        _check(node.value, text, names, fields)
        return
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
        raise ExpressionError(f"{text!r}: slices are not supported")
    allowed = (ast.Constant, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp, ast.Subscript, ast.List,
               ast.Tuple, ast.And, ast.Or, ast.Load, *_BINARY, *_COMPARE, *_UNARY)
    if not isinstance(node, allowed):
        raise ExpressionError(f"{text!r}: {type(node).__name__} is not supported in domain expressions")
    if isinstance(node, ast.Constant) and not isinstance(node.value, (str, int, float, bool, type(None))):
        raise ExpressionError(f"{text!r}: constant {node.value!r} is not supported")
    for child in ast.iter_child_nodes(node):
        _check(child, text, names, fields)


def _field(value: Any, key: Any, shown: str) -> Any:
    if isinstance(value, Mapping):
        if key not in value:
            raise ExpressionError(f"{shown} has no field {key!r}")
        return value[key]
    if isinstance(value, (list, tuple, str)) and isinstance(key, int) and not isinstance(key, bool):
        if not -len(value) <= key < len(value):
            raise ExpressionError(f"{shown} has no item {key}")
        return value[key]
    raise ExpressionError(f"{shown} is {type(value).__name__}, not a record")


def _evaluate(node: ast.AST, scope: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in scope:
            return scope[node.id]
        if node.id in _YAML_CONSTANTS:
            return _YAML_CONSTANTS[node.id]
        raise ExpressionError(f"unknown name {node.id!r}")
    if isinstance(node, ast.Attribute):
        return _field(_evaluate(node.value, scope), node.attr, ast.unparse(node.value))
    if isinstance(node, ast.Subscript):
        return _field(_evaluate(node.value, scope), _evaluate(node.slice, scope), ast.unparse(node.value))
    if isinstance(node, ast.BoolOp):
        result = None
        for value in node.values:
            result = _evaluate(value, scope)
            if isinstance(node.op, ast.And) != bool(result):  # `and` stops at a falsy value, `or` at a truthy one
                return result
        return result
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, scope), _evaluate(node.right, scope))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, scope))
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, scope)
        for op, right_node in zip(node.ops, node.comparators):
            right = _evaluate(right_node, scope)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _evaluate(node.body if _evaluate(node.test, scope) else node.orelse, scope)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_evaluate(item, scope) for item in node.elts]
    if isinstance(node, ast.Call):
        args = [_evaluate(arg, scope) for arg in node.args]
        kwargs = {kw.arg: _evaluate(kw.value, scope) for kw in node.keywords}
        return FUNCTIONS[node.func.id](*args, **kwargs)  # type: ignore[union-attr]  # checked at parse time
    raise ExpressionError(f"cannot evaluate {type(node).__name__}")  # unreachable after `_check`


@dataclass(frozen=True)
class Template:
    """Text with ``{expression[:format]}`` fields; see the module docstring."""

    text: str
    parts: tuple[str | tuple[Expression, str], ...] = field(default=())

    @property
    def expressions(self) -> list[Expression]:
        return [part[0] for part in self.parts if isinstance(part, tuple)]

    def render(self, scope: Mapping[str, Any]) -> Any:
        """The filled-in text; the value itself (any type) for a template that is one bare field."""
        if len(self.parts) == 1 and isinstance(self.parts[0], tuple) and not self.parts[0][1]:
            return self.parts[0][0].evaluate(scope)
        pieces = []
        for part in self.parts:
            if isinstance(part, str):
                pieces.append(part)
                continue
            expression, spec = part
            value = expression.evaluate(scope)
            try:
                pieces.append(format(value, spec))
            except (TypeError, ValueError) as exc:
                raise ExpressionError(f"{{{expression.text}:{spec}}}: {exc}") from None
        return "".join(pieces)


def parse_template(text: str) -> Template:
    """Split `text` into literal text and parsed fields; `ExpressionError` on unbalanced braces."""
    if not isinstance(text, str):
        raise ExpressionError(f"expected text, got {type(text).__name__}")
    parts: list[str | tuple[Expression, str]] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in "{}" and text[i + 1:i + 2] == char:  # {{ or }}: a literal brace
            literal.append(char)
            i += 2
            continue
        if char == "}":
            raise ExpressionError(f"{text!r}: single '}}' (write '}}}}' for a literal brace)")
        if char != "{":
            literal.append(char)
            i += 1
            continue
        end, colon = _field_end(text, i)
        if literal:
            parts.append("".join(literal))
            literal = []
        inner = text[i + 1:end]
        body, spec = (inner[:colon - i - 1], inner[colon - i:]) if colon is not None else (inner, "")
        parts.append((parse_expression(body), spec))
        i = end + 1
    if literal:
        parts.append("".join(literal))
    return Template(text, tuple(parts))


def _field_end(text: str, start: int) -> tuple[int, int | None]:
    """Index of the ``}`` closing the field opened at `start`, and of its top-level ``:`` (format spec)."""
    depth, quote, colon = 0, "", None
    for j in range(start + 1, len(text)):
        char = text[j]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]" or (char == "}" and depth):
            depth -= 1
        elif char == "}":
            return j, colon
        elif char == ":" and not depth and colon is None:
            colon = j
    raise ExpressionError(f"{text!r}: '{{' at position {start} is never closed")
