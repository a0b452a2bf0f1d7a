"""The few protobuf fields the gateway reads and writes in forwarded bytes, without parsing whole messages.

``ModelInferRequest``, ``ModelMetadataRequest``, ``ModelConfigRequest`` and ``ModelReadyRequest``
all carry the model's name in field 1 and its version in field 2 (strings), as
``ModelInferResponse`` does. The gateway reads them by walking the message's top-level
fields (skipping every length-delimited body, tensors included, without copying), and
readdresses a message by appending fields 1 and 2 after the rest: for a singular field
the last value on the wire wins (the protobuf encoding's rule, which Triton's parser
follows), so the caller's values are overridden without re-serialising the tensors.
"""

from __future__ import annotations

#: Wire types (protobuf encoding).
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class MalformedMessage(ValueError):
    """The bytes are not a protobuf message."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise MalformedMessage("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def name_and_version(data: bytes) -> tuple[str, str]:
    """Fields 1 and 2 of a request (the last occurrence of each, as a parser takes them).

    Raises:
        MalformedMessage: when ``data`` does not walk as a protobuf message.
    """
    name = version = b""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        field, kind = key >> 3, key & 7
        if kind == _LEN:
            size, pos = _varint(data, pos)
            if pos + size > end:
                raise MalformedMessage(f"field {field} runs past the end of the message")
            if field == 1:
                name = data[pos : pos + size]
            elif field == 2:
                version = data[pos : pos + size]
            pos += size
        elif kind == _VARINT:
            _, pos = _varint(data, pos)
        elif kind == _I64:
            pos += 8
        elif kind == _I32:
            pos += 4
        else:
            raise MalformedMessage(f"field {field} has wire type {kind}, which no KServe V2 message uses")
        if field == 0:
            raise MalformedMessage("field number 0")
    if pos != end:
        raise MalformedMessage("the last field runs past the end of the message")
    try:
        return name.decode(), version.decode()
    except UnicodeDecodeError as exc:
        raise MalformedMessage("the model name or version is not UTF-8") from exc


def _string_field(field: int, value: str) -> bytes:
    raw = value.encode()
    size = len(raw)
    prefix = bytearray([field << 3 | _LEN])
    while size >= 0x80:
        prefix.append(size & 0x7F | 0x80)
        size >>= 7
    prefix.append(size)
    return bytes(prefix) + raw


def readdressed(data: bytes, name: str, version: str | None = None) -> bytes:
    """``data`` with field 1 set to ``name`` and, unless None, field 2 to ``version`` (appended: last wins)."""
    tail = _string_field(1, name)
    if version is not None:
        tail += _string_field(2, version)
    return data + tail
