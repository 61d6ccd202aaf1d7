"""Kimi-K2.5's tool declaration: the TypeScript-style text its tokenizer writes for ``tools``.

The checkpoint's ``apply_chat_template`` (``tokenization_kimi.py``) deep-sorts the tool dicts (dict
keys sorted at every depth, lists kept in order), converts them with ``encode_tools_to_typescript_style``
(``tool_declaration_ts.py``, vendored unchanged by tinker-cookbook as
``renderers/kimi_k2_5_tool_declaration_ts.py``) and hands the result to ``chat_template.jinja`` as
``tools_ts_str``; the template writes ``<|im_system|>tool_declare<|im_middle|>{tools_ts_str}<|im_end|>``
and falls back to the tools as JSON when the conversion failed. This module is our own
implementation of those published rules, byte for byte:

Document::

    # Tools\\n\\n                                   (just this when no tool is a function)
    ## functions\\nnamespace functions {\\n
    FUNCTION\\nFUNCTION...\\n                       (functions joined by one newline, no blank line)
    }\\n

Function: ``[interfaces\\n][// description lines\\n]type NAME = (_: OBJECT) => any;`` (name defaults
to ``function``; only ``{"type": "function", "function": {...}}`` entries are declared).

Types (checked in this order): ``true``/``{}`` -> ``any``, ``false`` -> ``null``; ``$ref`` -> the
definition's name (``#`` -> ``parameters``); ``anyOf`` -> ``A | B``; ``enum`` -> ``"a" | 1 | None``
(strings quoted, other values as Python ``str``; values are checked against ``type``); ``type`` a
list -> a union (``integer`` -> ``number``, ``object`` -> ``{}``, ``array`` -> ``Array<any>``);
``object`` -> an object; ``array`` -> ``Array<T>`` (``Array<any>`` without ``items``; when the item
type has comments it goes on its own lines: ``Array<\\n  // ...\\n  T\\n>``); ``integer`` ->
``number``; any other ``type`` verbatim. Anything else is an error.

Object: ``{}`` without fields, else ``{\\n`` + fields joined by ``,\\n`` + ``\\n`` + indent + ``}``;
fields are indented two spaces deeper; required fields first, then optional ones (``name?:``),
each group sorted by name; ``additionalProperties`` adds ``[k: string]: any|never|T`` last.

Field comments, each ``// `` at the field's indent, in this order: the description (one comment per
line; an empty line stays empty), the constraints as ``k: v, k: v`` sorted by key (strings:
``maxLength``, ``minLength``, ``pattern``; numbers: ``maximum``, ``minimum``; arrays: ``maxItems``,
``minItems``), then ``Default: V`` (numbers and booleans as Python ``repr``, everything else as
``json.dumps(ensure_ascii=False)``).

``$defs`` of any object are collected while the schema is read; each becomes
``[// description\\n]interface NAME OBJECT`` before the function's comment. A ``$ref`` of ``#`` makes
the root an ``interface parameters {...}`` (its fields in schema order, unsorted) and the function
``(_: parameters)``. A ``$ref`` to a definition not (yet) collected, or in another form, is an error.

Any error makes the whole declaration fall back to compact JSON of the (deep-sorted) tools, as the
checkpoint's tokenizer does (it prints the error; we log it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["KIMI_TOOLS_JINJA", "deep_sort", "encode_tools_typescript", "tool_declaration"]

logger = logging.getLogger(__name__)

INDENT = "  "
_UNION_NAMES = {
    "string": "string", "number": "number", "integer": "number", "boolean": "boolean",
    "null": "null", "object": "{}", "array": "Array<any>",
}  # fmt: skip
_CONSTRAINT_KEYS = {
    "string": ("maxLength", "minLength", "pattern"),
    "number": ("maximum", "minimum"),
    "integer": ("maximum", "minimum"),
    "array": ("maxItems", "minItems"),
}
_ENUM_TYPES = {"string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,)}


def deep_sort(value: Any) -> Any:
    """Dicts with their keys sorted, at every depth; lists keep their order."""
    if isinstance(value, Mapping):
        return {key: deep_sort(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [deep_sort(item) for item in value]
    return value


def tool_declaration(tools: list[dict[str, Any]]) -> str:
    """The body of the ``tool_declare`` turn for (already deep-sorted) `tools`: the TypeScript
    declaration, or compact JSON where the schemas cannot be converted."""
    try:
        return encode_tools_typescript(tools)
    except Exception as exc:  # noqa: BLE001 - the checkpoint falls back on any error, so do we
        logger.warning("tool schemas not convertible to Kimi's TypeScript declaration (%s); declaring them as JSON", exc)
        return json.dumps(tools, ensure_ascii=False, separators=(",", ":"))


def encode_tools_typescript(tools: list[dict[str, Any]]) -> str:
    """Kimi-K2.5's ``tools_ts_str`` for `tools` (pass them deep-sorted, as the checkpoint does);
    raises ValueError (or another exception) on a schema the published encoder rejects."""
    if not tools:
        return ""
    functions = [_function(tool["function"]) for tool in tools if tool.get("type") == "function" and tool.get("function")]
    text = "# Tools\n\n"
    if functions:
        text += "## functions\nnamespace functions {\n" + "\n".join(functions) + "\n}\n"
    return text


# ------------------------------------------------------------------------------- schema -> tree
# A schema is read once into a small tree of dicts (``kind`` + fields), collecting ``$defs`` on the
# way; the tree is then written out. Reading first matters: which definitions exist when a
# ``$ref`` is met, and whether ``#`` is referenced, decide how the function is written.


class _Definitions:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self.self_referenced = False

    def resolve(self, ref: Any) -> str:
        if ref == "#":
            self.self_referenced = True
            return "parameters"
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.split("/")[-1]
            if name not in self.schemas:
                raise ValueError(f"reference not found: {ref}")
            return name
        raise ValueError(f"unsupported reference format: {ref}")


def _read(schema: Any, defs: _Definitions) -> dict[str, Any]:
    """One JSON schema -> ``{"kind": ..., "doc": (description, constraints), ...}``."""
    if schema is True or schema is False:
        if schema is False:
            logger.warning("a false schema is declared as null")
        return {"kind": "name", "name": "any" if schema else "null", "doc": ("", [])}
    if not isinstance(schema, Mapping):
        raise ValueError(f"invalid JSON schema: {schema!r}")
    doc = (schema.get("description", ""), [])
    if "$ref" in schema:
        return {"kind": "name", "name": defs.resolve(schema["$ref"]), "doc": doc}
    if "anyOf" in schema:
        return {"kind": "union", "members": [_read(s, defs) for s in schema["anyOf"]], "doc": doc}
    if "enum" in schema:
        _check_enum(schema)
        return {"kind": "enum", "values": list(schema["enum"]), "doc": doc}
    if "type" in schema:
        kind = schema["type"]
        if isinstance(kind, list):
            return {"kind": "name", "name": " | ".join(_UNION_NAMES[t] for t in kind), "doc": doc}
        if kind == "object":
            return _read_object(schema, defs)
        doc = (doc[0], [(k, schema[k]) for k in _CONSTRAINT_KEYS.get(kind, ()) if k in schema])
        if kind == "array":
            items = schema.get("items")
            item = _read(items, defs) if items else {"kind": "name", "name": "any", "doc": ("", [])}
            return {"kind": "array", "item": item, "doc": doc}
        return {"kind": "name", "name": "number" if kind == "integer" else kind, "doc": doc}
    if not schema:
        return {"kind": "name", "name": "any", "doc": doc}
    raise ValueError(f"invalid JSON schema: {schema!r}")


def _read_object(schema: Mapping[str, Any], defs: _Definitions) -> dict[str, Any]:
    node: dict[str, Any] = {"kind": "object", "fields": [], "extra": None, "doc": (schema.get("description", ""), [])}
    if not schema:
        return node
    if "$defs" in schema:
        defs.schemas.update(schema["$defs"])
    extra = schema.get("additionalProperties")
    node["extra"] = _read(extra, defs) if isinstance(extra, Mapping) else extra
    if "properties" not in schema:
        return node
    required = set(schema.get("required", []))
    for name, prop in schema["properties"].items():
        default = prop.get("default") if isinstance(prop, Mapping) else None
        node["fields"].append({"name": name, "type": _read(prop, defs), "optional": name not in required, "default": default})
    return node


def _check_enum(schema: Mapping[str, Any]) -> None:
    """The published encoder's check of enum values against the declared ``type``."""
    if "type" not in schema:
        return
    kind = schema["type"]
    if isinstance(kind, list):
        if len(kind) == 2 and "null" in kind:
            kind = kind[0] if kind[0] != "null" else kind[1]
        elif len(kind) == 1:
            kind = kind[0]
        else:
            raise ValueError(f"enum type {kind} is not supported")
    allowed = _ENUM_TYPES.get(kind) if isinstance(kind, str) else None
    for value in schema["enum"]:
        if value is not None and allowed and not isinstance(value, allowed):
            raise ValueError(f"enum value {value!r} is not a {kind}")


# ------------------------------------------------------------------------------- tree -> text


def _function(function: Mapping[str, Any]) -> str:
    defs = _Definitions()
    root = _read_object(function.get("parameters") or {}, defs)
    interfaces, self_referenced = [], defs.self_referenced  # decided before definitions are read
    if self_referenced:
        fields = ",\n".join(_field(field, INDENT) for field in root["fields"])
        interfaces.append("interface parameters {" + (f"\n{fields}\n" if fields else "") + "}")
    for name, schema in list(defs.schemas.items()):
        body = _type(_read(schema, defs), "")
        description = schema.get("description", "")
        interfaces.append((_comment(description) + "\n" if description else "") + f"interface {name} {body}")
    argument = "parameters" if self_referenced else _type(root, "")
    description = function.get("description")
    pieces = ["\n".join(interfaces), _comment(description) if description else "",
              f"type {function.get('name', 'function')} = (_: {argument}) => any;"]
    return "\n".join(piece for piece in pieces if piece)


def _comment(text: str, indent: str = "") -> str:
    return "\n".join(f"{indent}// {line}" if line else "" for line in text.split("\n"))


def _doc(node: dict[str, Any], indent: str) -> str:
    """The node's comment lines (description, then constraints), each ending in a newline."""
    description, constraints = node["doc"]
    lines = [_comment(description, indent)] if description else []
    if constraints:
        lines.append(indent + "// " + ", ".join(f"{k}: {v}" for k, v in sorted(constraints)))
    return "".join(line + "\n" for line in lines)


def _field(field: dict[str, Any], indent: str) -> str:
    comments = _doc(field["type"], indent)
    default = field["default"]
    if default is not None:
        shown = repr(default) if isinstance(default, (int, float, bool)) else json.dumps(default, ensure_ascii=False)
        comments += f"{indent}// Default: {shown}\n"
    optional = "?" if field["optional"] else ""
    return f"{comments}{indent}{field['name']}{optional}: {_type(field['type'], indent)}"


def _type(node: dict[str, Any], indent: str) -> str:
    kind = node["kind"]
    if kind == "name":
        return node["name"]
    if kind == "union":
        return " | ".join(_type(member, indent) for member in node["members"])
    if kind == "enum":
        return " | ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in node["values"])
    if kind == "array":
        item, inner = node["item"], indent + INDENT
        comments = _doc(item, inner)
        if comments:
            return f"Array<\n{comments}{inner}{_type(item, inner)}\n{indent}>"
        return f"Array<{_type(item, indent)}>"
    return _object(node, indent)


def _object(node: dict[str, Any], indent: str) -> str:
    inner = indent + INDENT
    fields = sorted(node["fields"], key=lambda field: (field["optional"], field["name"]))
    lines = [_field(field, inner) for field in fields]
    extra = node["extra"]
    if extra is not None:
        if extra is True:
            shown = "any"
        elif extra is False:
            shown = "never"
        elif isinstance(extra, dict) and "kind" in extra:
            shown = _type(extra, inner)
        else:
            raise ValueError(f"unknown additionalProperties: {extra!r}")
        lines.append(f"{inner}[k: string]: {shown}")
    if not lines:
        return "{}"
    return "{\n" + ",\n".join(lines) + f"\n{indent}}}"


# ------------------------------------------------------------------------------- the same in jinja
# For tokenizers without the checkpoint's remote code (the tiny model's): the macros below write
# what `tool_declaration(deep_sort(tools))` returns; tests hold the two to the same output on
# generated schemas. Dict iteration is sorted (``dictsort(true)``: case-sensitive, as ``sorted``)
# and JSON is written with ``sort_keys`` wherever the deep sort shows. One simplification: ``$defs``
# are read from the top of ``parameters`` only; ``$defs`` deeper in a schema stop the render with an
# error asking for ``tools_ts_str`` (pass `encode_tools_typescript(deep_sort(tools))`).
KIMI_TOOLS_JINJA = r"""
{%- macro ts_comment(text, indent) -%}
  {%- for line in text.split('\n') -%}
    {{- '\n' if not loop.first else '' -}}{{- (indent ~ '// ' ~ line) if line else '' -}}
  {%- endfor -%}
{%- endmacro -%}
{%- macro ts_constraint_keys(s) -%}
  {%- if '$ref' not in s and 'anyOf' not in s and 'enum' not in s and s['type'] is string -%}
    {%- if s['type'] == 'string' -%}maxLength minLength pattern
    {%- elif s['type'] in ['number', 'integer'] -%}maximum minimum
    {%- elif s['type'] == 'array' -%}maxItems minItems
    {%- endif -%}
  {%- endif -%}
{%- endmacro -%}
{%- macro ts_doc(s, indent) -%}
  {%- if s is mapping -%}
    {%- if s.get('description') -%}{{- ts_comment(s['description'], indent) ~ '\n' -}}{%- endif -%}
    {%- set doc = namespace(items=[]) -%}
    {%- for key in ts_constraint_keys(s).split() if key in s -%}
      {%- set doc.items = doc.items + [key ~ ': ' ~ s[key]] -%}
    {%- endfor -%}
    {%- if doc.items -%}{{- indent ~ '// ' ~ doc.items | join(', ') ~ '\n' -}}{%- endif -%}
  {%- endif -%}
{%- endmacro -%}
{%- macro ts_field(name, prop, optional, indent) -%}
  {{- ts_doc(prop, indent) -}}
  {%- if prop is mapping and prop.get('default') is not none -%}
    {%- set default = prop['default'] -%}
    {{- indent ~ '// Default: ' ~ (default if default is number else default | tojson(sort_keys=true)) ~ '\n' -}}
  {%- endif -%}
  {{- indent ~ name ~ ('?' if optional else '') ~ ': ' ~ ts_type(prop, indent) -}}
{%- endmacro -%}
{%- macro ts_object(s, indent) -%}
  {%- set inner = indent ~ '  ' -%}
  {%- set obj = namespace(lines=[]) -%}
  {%- if s and 'properties' in s -%}
    {%- set required = s.get('required', []) -%}
    {%- for name, prop in s['properties'] | dictsort(true) if name in required -%}
      {%- set obj.lines = obj.lines + [ts_field(name, prop, false, inner)] -%}
    {%- endfor -%}
    {%- for name, prop in s['properties'] | dictsort(true) if name not in required -%}
      {%- set obj.lines = obj.lines + [ts_field(name, prop, true, inner)] -%}
    {%- endfor -%}
  {%- endif -%}
  {%- if s and s.get('additionalProperties') is not none -%}
    {%- set extra = s['additionalProperties'] -%}
    {%- set shown = ts_type(extra, inner) if extra is mapping else ('any' if extra else 'never') -%}
    {%- set obj.lines = obj.lines + [inner ~ '[k: string]: ' ~ shown] -%}
  {%- endif -%}
  {{- ('{\n' ~ obj.lines | join(',\n') ~ '\n' ~ indent ~ '}') if obj.lines else '{}' -}}
{%- endmacro -%}
{%- macro ts_type(s, indent) -%}
  {%- if s is boolean -%}{{- 'any' if s else 'null' -}}
  {%- elif '$ref' in s -%}{{- 'parameters' if s['$ref'] == '#' else s['$ref'].split('/')[-1] -}}
  {%- elif 'anyOf' in s -%}
    {%- for member in s['anyOf'] -%}{{- (' | ' if not loop.first else '') ~ ts_type(member, indent) -}}{%- endfor -%}
  {%- elif 'enum' in s -%}
    {%- for value in s['enum'] -%}
      {{- (' | ' if not loop.first else '') ~ (('"' ~ value ~ '"') if value is string else value) -}}
    {%- endfor -%}
  {%- elif 'type' in s and s['type'] is string -%}
    {%- if s['type'] == 'object' -%}{{- ts_object(s, indent) -}}
    {%- elif s['type'] == 'array' -%}
      {%- set inner = indent ~ '  ' -%}
      {%- set item_doc = ts_doc(s['items'], inner) if s.get('items') else '' -%}
      {%- if item_doc -%}{{- 'Array<\n' ~ item_doc ~ inner ~ ts_type(s['items'], inner) ~ '\n' ~ indent ~ '>' -}}
      {%- else -%}{{- 'Array<' ~ (ts_type(s['items'], indent) if s.get('items') else 'any') ~ '>' -}}
      {%- endif -%}
    {%- else -%}{{- 'number' if s['type'] == 'integer' else s['type'] -}}
    {%- endif -%}
  {%- elif 'type' in s -%}
    {%- set names = {'string': 'string', 'number': 'number', 'integer': 'number', 'boolean': 'boolean',
                     'null': 'null', 'object': '{}', 'array': 'Array<any>'} -%}
    {%- for kind in s['type'] -%}{{- (' | ' if not loop.first else '') ~ names[kind] -}}{%- endfor -%}
  {%- else -%}any
  {%- endif -%}
{%- endmacro -%}
{%- macro ts_enum_error(s) -%}
  {%- if 'type' in s -%}
    {%- set kind = s['type'] -%}
    {%- if kind is not string -%}
      {%- if kind | length == 1 -%}{%- set kind = kind[0] -%}
      {%- elif kind | length == 2 and 'null' in kind -%}{%- set kind = kind[1] if kind[0] == 'null' else kind[0] -%}
      {%- else -%}unsupported enum type;
      {%- endif -%}
    {%- endif -%}
    {%- for value in s['enum'] if value is not none -%}
      {%- if (kind == 'string' and value is not string) or (kind == 'number' and value is not number)
             or (kind == 'integer' and not (value is integer or value is boolean))
             or (kind == 'boolean' and value is not boolean) -%}enum value of the wrong type;
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{%- macro ts_error(s, defs, root=false) -%}
  {%- if s is boolean -%}
  {%- elif s is not mapping -%}invalid schema;
  {%- elif not root and '$ref' in s -%}
    {%- set ref = s['$ref'] -%}
    {%- if ref != '#' and not (ref is string and ref.startswith('#/$defs/') and ref.split('/')[-1] in defs) -%}bad $ref;{%- endif -%}
  {%- elif not root and 'anyOf' in s -%}
    {%- for member in s['anyOf'] -%}{{- ts_error(member, defs) -}}{%- endfor -%}
  {%- elif not root and 'enum' in s -%}{{- ts_enum_error(s) -}}
  {%- elif root or s['type'] == 'object' -%}
    {%- if s -%}
      {%- if '$defs' in s and not root -%}{{- raise_exception('Kimi tool schemas with $defs below the top of parameters: pass tools_ts_str') -}}{%- endif -%}
      {%- set extra = s.get('additionalProperties') -%}
      {%- if extra is mapping -%}{{- ts_error(extra, defs) -}}
      {%- elif extra is not none and extra is not boolean -%}bad additionalProperties;
      {%- endif -%}
      {%- for name, prop in (s['properties'].items() if 'properties' in s else []) -%}{{- ts_error(prop, defs) -}}{%- endfor -%}
    {%- endif -%}
  {%- elif s['type'] == 'array' -%}{%- if s.get('items') -%}{{- ts_error(s['items'], defs) -}}{%- endif -%}
  {%- elif 'type' in s and s['type'] is not string -%}
    {%- for kind in s['type'] if kind not in ['string', 'number', 'integer', 'boolean', 'null', 'object', 'array'] -%}unknown type;{%- endfor -%}
  {%- elif 'type' not in s and s | length > 0 -%}invalid schema;
  {%- endif -%}
{%- endmacro -%}
{%- macro ts_self_ref(s) -%}
  {%- if s is mapping -%}
    {%- if '$ref' in s -%}{{- 'yes' if s['$ref'] == '#' else '' -}}
    {%- elif 'anyOf' in s -%}{%- for member in s['anyOf'] -%}{{- ts_self_ref(member) -}}{%- endfor -%}
    {%- elif 'enum' in s -%}
    {%- elif s['type'] == 'array' and s.get('items') -%}{{- ts_self_ref(s['items']) -}}
    {%- elif s['type'] == 'object' -%}{{- ts_self_ref_fields(s) -}}
    {%- endif -%}
  {%- endif -%}
{%- endmacro -%}
{%- macro ts_self_ref_fields(s) -%}
  {%- if s -%}
    {{- ts_self_ref(s.get('additionalProperties')) -}}
    {%- for name, prop in (s['properties'].items() if 'properties' in s else []) -%}{{- ts_self_ref(prop) -}}{%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{%- macro ts_function_error(function) -%}
  {%- set params = function.get('parameters') or {} -%}
  {%- set defs = (params.get('$defs') or {}) if params is mapping else {} -%}
  {{- ts_error(params, defs, true) if params is mapping else 'invalid parameters;' -}}
  {%- for name, schema in defs | dictsort(true) -%}
    {%- if schema is mapping and ('$defs' in schema) -%}{{- raise_exception('Kimi tool schemas with $defs below the top of parameters: pass tools_ts_str') -}}{%- endif -%}
    {{- ts_error(schema, defs) if schema is mapping else 'invalid definition;' -}}
  {%- endfor -%}
{%- endmacro -%}
{%- macro ts_function(function) -%}
  {%- set params = function.get('parameters') or {} -%}
  {%- set fn = namespace(parts=[]) -%}
  {%- set self_ref = ts_self_ref_fields(params) -%}
  {%- if self_ref -%}
    {%- set root = namespace(lines=[]) -%}
    {%- for name, prop in (params['properties'] | dictsort(true) if 'properties' in params else []) -%}
      {%- set root.lines = root.lines + [ts_field(name, prop, name not in params.get('required', []), '  ')] -%}
    {%- endfor -%}
    {%- set fn.parts = fn.parts + ['interface parameters {' ~ (('\n' ~ root.lines | join(',\n') ~ '\n') if root.lines else '') ~ '}'] -%}
  {%- endif -%}
  {%- for name, schema in ((params.get('$defs') or {}) if params else {}) | dictsort(true) -%}
    {%- set described = (ts_comment(schema['description'], '') ~ '\n') if schema.get('description') else '' -%}
    {%- set fn.parts = fn.parts + [described ~ 'interface ' ~ name ~ ' ' ~ ts_type(schema, '')] -%}
  {%- endfor -%}
  {%- if function.get('description') -%}{%- set fn.parts = fn.parts + [ts_comment(function['description'], '')] -%}{%- endif -%}
  {%- set argument = 'parameters' if self_ref else ts_object(params, '') -%}
  {%- set fn.parts = fn.parts + ['type ' ~ function.get('name', 'function') ~ ' = (_: ' ~ argument ~ ') => any;'] -%}
  {{- fn.parts | select | join('\n') -}}
{%- endmacro -%}
{%- macro ts_declaration(tools) -%}
  {%- set decl = namespace(functions=[], error='') -%}
  {%- for tool in tools if tool.get('type') == 'function' and tool.get('function') -%}
    {%- set decl.error = decl.error ~ ts_function_error(tool['function']) -%}
  {%- endfor -%}
  {%- if decl.error -%}{{- tools | tojson(separators=(',', ':'), sort_keys=true) -}}
  {%- else -%}
    {%- for tool in tools if tool.get('type') == 'function' and tool.get('function') -%}
      {%- set decl.functions = decl.functions + [ts_function(tool['function'])] -%}
    {%- endfor -%}
    {{- '# Tools\n\n' -}}
    {%- if decl.functions -%}{{- '## functions\nnamespace functions {\n' ~ decl.functions | join('\n') ~ '\n}\n' -}}{%- endif -%}
  {%- endif -%}
{%- endmacro -%}
"""
"""Jinja macros writing Kimi's TypeScript tool declaration (``ts_declaration(tools)``), for
`KIMI_CHAT_TEMPLATE`."""
