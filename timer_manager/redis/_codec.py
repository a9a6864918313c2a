"""Payloads on the wire: what a set's ``data=`` becomes in Redis, and back.

``None``, ``bytes`` and ``str`` travel as they are; anything else as JSON, unless the backend was
given a serializer. A tag byte says which, so that ``b"1"``, ``"1"`` and ``1`` come back as they went.
Nothing from the server is ever unpickled unless the user passes such a serializer.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from .._validate import shown

__all__ = ("NO_DATA", "Codec", "Serializer")


class Serializer(Protocol):
    """What ``RedisBackend(serializer=...)`` takes: any object with these two methods."""

    def dumps(self, value: Any, /) -> bytes:
        """Encode a payload."""

    def loads(self, raw: bytes, /) -> Any:
        """Decode what :meth:`dumps` made."""


_NONE, _BYTES, _STR, _JSON, _CUSTOM = b"n", b"b", b"s", b"j", b"x"
NO_DATA = _NONE  # the encoded payload of a set without data


class Codec:
    """Encodes payloads at the call (so a bad one is refused there) and decodes them from events."""

    __slots__ = ("_serializer",)

    def __init__(self, serializer: Serializer | None) -> None:
        if serializer is not None and not (
            callable(getattr(serializer, "dumps", None)) and callable(getattr(serializer, "loads", None))
        ):
            raise TypeError(f"serializer must have dumps() and loads() methods, got {type(serializer).__name__}")
        self._serializer = serializer

    def encode(self, value: Any) -> bytes:
        """The payload as tagged bytes; ``TypeError`` for one the serializer (JSON by default) cannot take."""
        if value is None:
            return _NONE
        if type(value) is bytes:
            return _BYTES + value
        if type(value) is str:
            return _STR + value.encode("utf-8", "surrogatepass")
        if self._serializer is not None:
            raw = self._serializer.dumps(value)
            if not isinstance(raw, (bytes, bytearray)):
                raise TypeError(f"the serializer's dumps() must return bytes, got {type(raw).__name__}")
            return _CUSTOM + bytes(raw)
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"data must be None, bytes, str or JSON-serializable on the Redis backend (or pass "
                f"RedisBackend(serializer=...)), got {type(value).__name__}: {shown(value)} ({exc})"
            ) from None
        return _JSON + text.encode("utf-8", "surrogatepass")  # as a str payload: json.loads takes it back

    def decode(self, raw: bytes) -> Any:
        """The payload that :meth:`encode` turned into ``raw``."""
        tag, body = raw[:1], raw[1:]
        if tag == _NONE:
            return None
        if tag == _BYTES:
            return body
        if tag == _STR:
            return body.decode("utf-8", "surrogatepass")
        if tag == _JSON:
            return json.loads(body)
        if tag == _CUSTOM and self._serializer is not None:
            return self._serializer.loads(body)
        raise ValueError(f"a payload this backend cannot decode (tag {tag!r}): set the same serializer everywhere")
