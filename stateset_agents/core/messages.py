"""Chat messages: plain OpenAI-style dicts, their validation, and the images they carry.

A message is ``{"role": "system" | "user" | "assistant" | "tool", "content": str | list[part]}``.
A part is ``{"type": "text", "text": str}``, ``{"type": "image_url", "image_url": {"url": str}}``
or ``{"type": "image", "image": PIL.Image | path}``. Assistant messages may carry
``reasoning_content`` (str) and OpenAI ``tool_calls``; tool messages carry ``tool_call_id`` and an
optional ``name``.

Simplifications: images are only accepted in user and tool messages (where Kimi-K2.5 reads them),
and remote ``http(s)://`` images are never fetched at training time.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

ROLES = ("system", "user", "assistant", "tool")
TEXT_PART_TYPES = ("text",)
IMAGE_PART_TYPES = ("image_url", "image")
IMAGE_ROLES = ("user", "tool")
# Larger pictures are refused from their header, before decoding (a 20000x20000 PNG of a few KB
# would decode to 1.2 GB); Kimi's processor downscales to at most 7168 pixels a side anyway.
MAX_IMAGE_PIXELS = 64_000_000

Message = dict[str, Any]


class MessageValidationError(ValueError):
    """A conversation is malformed; the message says which message (and part) and why."""


class ImageLoadError(ValueError):
    """An image reference could not be turned into a picture."""


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
    """Check a conversation and return it as a list of message dicts.

    Raises `MessageValidationError` naming the message index (and part or tool-call index) of the
    first problem, e.g. ``"message 2, part 1: image_url.url must be a non-empty string"``.
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise MessageValidationError(f"messages must be a list of dicts, got {type(messages).__name__}")
    if not messages:
        raise MessageValidationError("messages is empty: a conversation needs at least one message")
    for index, message in enumerate(messages):
        _validate_message(index, message)
    return [message if isinstance(message, dict) else dict(message) for message in messages]


def _fail(where: str, problem: str) -> MessageValidationError:
    return MessageValidationError(f"{where}: {problem}")


def _validate_message(index: int, message: Any) -> None:
    where = f"message {index}"
    if not isinstance(message, Mapping):
        raise _fail(where, f"expected a dict with 'role' and 'content', got {type(message).__name__}")
    role = message.get("role")
    if role not in ROLES:
        raise _fail(where, f"role must be one of {', '.join(ROLES)}; got {role!r}")
    _validate_content(where, role, message)
    reasoning = message.get("reasoning_content")
    if reasoning is not None and (role != "assistant" or not isinstance(reasoning, str)):
        raise _fail(where, "reasoning_content must be a string, on assistant messages only")
    if message.get("tool_calls") is not None:
        if role != "assistant":
            raise _fail(where, f"tool_calls are only allowed on assistant messages, not {role}")
        _validate_tool_calls(where, message["tool_calls"])
    if role == "tool":
        _validate_tool_result(where, message)


def _validate_content(where: str, role: str, message: Mapping[str, Any]) -> None:
    content = message.get("content")
    if content is None:
        if role == "assistant" and message.get("tool_calls"):
            return  # OpenAI allows content=None on a turn that only calls tools
        raise _fail(where, "content is missing (use a string or a list of parts)")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _fail(where, f"content must be a string or a list of parts, got {type(content).__name__}")
    for part_index, part in enumerate(content):
        _validate_part(f"{where}, part {part_index}", role, part)


def _validate_part(where: str, role: str, part: Any) -> None:
    if not isinstance(part, Mapping):
        raise _fail(where, f"a content part must be a dict with a 'type', got {type(part).__name__}")
    part_type = part.get("type")
    if part_type == "text":
        if not isinstance(part.get("text"), str):
            raise _fail(where, "text part needs 'text' (a string)")
        return
    if part_type not in IMAGE_PART_TYPES:
        allowed = ", ".join(TEXT_PART_TYPES + IMAGE_PART_TYPES)
        raise _fail(where, f"part type must be one of {allowed}; got {part_type!r}")
    if role not in IMAGE_ROLES:
        raise _fail(where, f"image parts are only allowed in user and tool messages, not {role}")
    if part_type == "image_url":
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, Mapping) else None
        if not isinstance(url, str) or not url.strip():
            raise _fail(
                where,
                "image_url.url must be a non-empty string (a data: URL, a local path or a file:// URL), "
                'as in {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}',
            )
    else:
        image = part.get("image")
        if not isinstance(image, (Image.Image, str, os.PathLike)) or (isinstance(image, str) and not image.strip()):
            raise _fail(where, "image part needs 'image': a PIL.Image, a path, or a data: URL")


def _validate_tool_calls(where: str, tool_calls: Any) -> None:
    if not isinstance(tool_calls, list):
        raise _fail(where, f"tool_calls must be a list, got {type(tool_calls).__name__}")
    for call_index, call in enumerate(tool_calls):
        call_where = f"{where}, tool call {call_index}"
        if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
            raise _fail(call_where, 'expected {"id": ..., "type": "function", "function": {"name", "arguments"}}')
        if call.get("type", "function") != "function":
            raise _fail(call_where, f"type must be 'function', got {call.get('type')!r}")
        if call.get("id") is not None and not isinstance(call["id"], str):
            raise _fail(call_where, "id must be a string")
        function = call["function"]
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise _fail(call_where, "function.name must be a non-empty string")
        if not isinstance(function.get("arguments"), (str, Mapping)):
            raise _fail(call_where, "function.arguments must be a JSON string (or a dict)")


def _validate_tool_result(where: str, message: Mapping[str, Any]) -> None:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _fail(where, "tool messages need 'tool_call_id' (the id of the call they answer)")
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise _fail(where, "tool message 'name' must be a string")


# --------------------------------------------------------------------------------------------
# Reading messages
# --------------------------------------------------------------------------------------------


def content_parts(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The message content as a list of parts (a string becomes one text part; None none)."""
    content = message.get("content")
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content)


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message: a string content as it is; the text parts of a list content joined
    with spaces and stripped (images and malformed parts skipped); "" for anything else.

    The one text view of a message that users, scripted agents and rewards read (rewards were
    measured with this space join; the chat formats render parts their own way)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content
                        if isinstance(part, Mapping) and part.get("type") == "text").strip()
    return ""


def is_image_part(part: Mapping[str, Any]) -> bool:
    """True for ``image_url`` and ``image`` parts."""
    return part.get("type") in IMAGE_PART_TYPES


def extract_images(messages: Sequence[Mapping[str, Any]]) -> list[Image.Image]:
    """Load every image of the conversation, in order of appearance, as RGB PIL images."""
    images = []
    for message in messages:
        for part in content_parts(message):
            if part.get("type") == "image_url":
                images.append(load_image(part["image_url"]["url"]))
            elif part.get("type") == "image":
                images.append(load_image(part["image"]))
    return images


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def load_image(source: str | os.PathLike[str] | Image.Image) -> Image.Image:
    """Open an image as RGB from a ``data:`` URL, a local path, a ``file://`` URL or a PIL image.

    Remote ``http(s)://`` URLs are refused: nothing is downloaded during training.
    """
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, os.PathLike):
        return _open_path(Path(source))
    if not isinstance(source, str):
        raise ImageLoadError(f"cannot load an image from a {type(source).__name__}")
    if source.startswith("data:"):
        return _open_bytes(_decode_data_url(source), "the data: URL")
    scheme = urlparse(source).scheme.lower()
    if scheme in ("http", "https"):
        raise ImageLoadError(
            f"remote images are not fetched at training time: {source[:200]}. "
            "Download the image and pass a local path or a data: URL instead."
        )
    if scheme == "file":
        parsed = urlparse(source)
        return _open_path(Path(unquote(parsed.netloc + parsed.path)))
    return _open_path(Path(source).expanduser())


def _decode_data_url(url: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ImageLoadError(
            f"unsupported data URL {url[:60]!r}...: expected 'data:image/<format>;base64,<payload>'"
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageLoadError(f"data URL payload is not valid base64: {exc}") from exc


def _open_path(path: Path) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    return _open_bytes(path.read_bytes(), str(path))


def _open_bytes(data: bytes, what: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise _too_large(what, width, height)
            return image.convert("RGB")
    except Image.DecompressionBombError as exc:  # Pillow's own check, in open(), for huge headers
        raise ImageLoadError(f"{what} is too large to decode ({exc}); the limit is {MAX_IMAGE_PIXELS:,} pixels. "
                             "Downscale the image first.") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageLoadError(f"{what} is not a readable image: {exc}") from exc


def _too_large(what: str, width: int, height: int) -> ImageLoadError:
    return ImageLoadError(f"{what} is {width}x{height} pixels, more than the limit of {MAX_IMAGE_PIXELS:,}; "
                          "downscale the image first (the model sees at most 7168 pixels a side).")


def image_to_data_url(image: Image.Image) -> str:
    """Encode a PIL image as a ``data:image/png;base64,...`` URL."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
