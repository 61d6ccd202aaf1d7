"""Message validation, images and text extraction."""

from __future__ import annotations

import pytest
from PIL import Image

from stateset_agents.core.messages import (
    ImageLoadError,
    MessageValidationError,
    extract_images,
    image_to_data_url,
    load_image,
    message_text,
    validate_messages,
)


@pytest.fixture
def red() -> Image.Image:
    return Image.new("RGB", (3, 2), (255, 0, 0))


@pytest.fixture
def red_path(tmp_path, red) -> str:
    path = tmp_path / "red image.png"
    red.save(path)
    return str(path)


def guide_snippet(url: str) -> list[dict]:
    """The multimodal example from the user guide, with a loadable url."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe this image."},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


def test_guide_multimodal_snippet_validates_and_loads(red, red_path):
    for url in (image_to_data_url(red), red_path, "file://" + red_path):
        messages = validate_messages(guide_snippet(url))
        (image,) = extract_images(messages)
        assert image.mode == "RGB" and image.size == (3, 2) and image.getpixel((0, 0)) == (255, 0, 0)


def test_valid_tool_conversation_passes():
    messages = [
        {"role": "system", "content": "Be helpful."},
        {"role": "user", "content": "Order 7?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "look it up",
            "tool_calls": [{"id": "functions.get:0", "type": "function", "function": {"name": "get", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "functions.get:0", "name": "get", "content": "shipped"},
        {"role": "assistant", "content": [{"type": "text", "text": "It shipped."}]},
    ]
    assert validate_messages(messages) == messages


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ("hello", "messages must be a list"),
        ([], "messages is empty"),
        (["hi"], "message 0: expected a dict"),
        ([{"role": "bot", "content": "x"}], "message 0: role must be one of system, user, assistant, tool; got 'bot'"),
        ([{"role": "user"}], "message 0: content is missing"),
        ([{"role": "user", "content": 3}], "message 0: content must be a string or a list of parts, got int"),
        ([{"role": "user", "content": ["x"]}], "message 0, part 0: a content part must be a dict"),
        ([{"role": "user", "content": [{"type": "audio"}]}], "message 0, part 0: part type must be one of text, image_url, image; got 'audio'"),
        ([{"role": "user", "content": [{"type": "text", "text": None}]}], "message 0, part 0: text part needs 'text'"),
        ([{"role": "user", "content": [{"type": "image"}]}], "message 0, part 0: image part needs 'image'"),
        (
            [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
             {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": ""}}]}],
            "message 2, part 1: image_url.url must be a non-empty string",
        ),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": "data:x"}]}], "message 0, part 0: image_url.url must be"),
        ([{"role": "assistant", "content": [{"type": "image", "image": "a.png"}]}], "message 0, part 0: image parts are only allowed in user and tool messages"),
        ([{"role": "tool", "content": "r"}], "message 0: tool messages need 'tool_call_id'"),
        ([{"role": "tool", "tool_call_id": "x", "name": 5, "content": "r"}], "message 0: tool message 'name' must be a string"),
        ([{"role": "user", "content": "u", "reasoning_content": "r"}], "message 0: reasoning_content must be a string, on assistant messages only"),
        ([{"role": "user", "content": "u", "tool_calls": []}], "message 0: tool_calls are only allowed on assistant messages"),
        ([{"role": "assistant", "content": "a", "tool_calls": {}}], "message 0: tool_calls must be a list"),
        ([{"role": "assistant", "content": "a", "tool_calls": [{"name": "f"}]}], "message 0, tool call 0: expected"),
        (
            [{"role": "assistant", "content": "a", "tool_calls": [{"type": "function", "function": {"name": "", "arguments": "{}"}}]}],
            "message 0, tool call 0: function.name must be a non-empty string",
        ),
        (
            [{"role": "assistant", "content": "a", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": 3}}]}],
            "message 0, tool call 0: function.arguments must be a JSON string",
        ),
        ([{"role": "assistant", "content": None}], "message 0: content is missing"),
    ],
)
def test_validation_errors_name_the_place(messages, expected):
    with pytest.raises(MessageValidationError) as error:
        validate_messages(messages)
    assert str(error.value).startswith(expected)
    assert isinstance(error.value, ValueError)


def test_load_image_accepts_pil_and_paths(red, red_path, tmp_path):
    gray = red.convert("L")
    assert load_image(gray).mode == "RGB"
    assert load_image(tmp_path / "red image.png").getpixel((1, 1)) == (255, 0, 0)
    assert load_image("file://" + red_path.replace(" ", "%20")).size == (3, 2)
    assert load_image(image_to_data_url(gray)).getpixel((0, 0)) == (76, 76, 76)


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        ("https://example.com/cat.png", ImageLoadError, "remote images are not fetched at training time.*local path or a data: URL"),
        ("/no/such/cat.png", FileNotFoundError, "image file not found: /no/such/cat.png"),
        ("file:///no/such/cat.png", FileNotFoundError, "/no/such/cat.png"),
        ("data:image/png;base64,***", ImageLoadError, "not valid base64"),
        ("data:text/plain,hello", ImageLoadError, "unsupported data URL"),
        ("data:image/png;base64,aGVsbG8=", ImageLoadError, "not a readable image"),
        (42, ImageLoadError, "cannot load an image from a int"),
    ],
)
def test_load_image_errors(source, error, match):
    with pytest.raises(error, match=match):
        load_image(source)


def test_extract_images_in_order_and_message_text(red, red_path):
    blue = Image.new("RGB", (1, 1), (0, 0, 255))
    messages = [
        {"role": "user", "content": [{"type": "image", "image": blue}, {"type": "text", "text": "first"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "tool", "tool_call_id": "t", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"},
                                                          {"type": "image_url", "image_url": {"url": red_path}}]},
    ]
    colors = [image.getpixel((0, 0)) for image in extract_images(messages)]
    assert colors == [(0, 0, 255), (255, 0, 0)]
    assert [message_text(m) for m in messages] == ["first", "ok", "a b"]  # the join rewards were measured with
    assert message_text({"role": "user", "content": [{"type": "text", "text": " hi "}, {"type": "image"}]}) == "hi"
    assert message_text({"role": "assistant", "content": None}) == ""


def test_image_to_data_url_round_trips(red):
    url = image_to_data_url(red)
    assert url.startswith("data:image/png;base64,")
    assert load_image(url).tobytes() == red.tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A few bytes of PNG claiming `width` x `height` (1-bit grey): cheap to build, huge to decode."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20000, 9000])
def test_huge_images_are_refused_before_decoding(tmp_path, side):
    import base64

    data = png_header_only(side, side)
    path = tmp_path / "huge.png"
    path.write_bytes(data)
    url = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    for source in (path, url):
        # 9000: our header check; 20000: Pillow's own check in open(), turned into ImageLoadError
        with pytest.raises(ImageLoadError, match="more than the limit of 64,000,000|too large to decode"):
            load_image(source)
