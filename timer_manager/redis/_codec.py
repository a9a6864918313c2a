"""Payloads on the wire: what a set's ``data=`` becomes in Redis, and back.

``None``, ``bytes`` and ``str`` travel as they are; anything else as JSON, unless the backend was
given a serializer. A tag byte says which, so that ``b"1"``, ``"1"`` and ``1`` come back as they went.
Nothing from the server is ever unpickled unless the user passes such a serializer.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from .._validate import shown

__all__ = ("MAX_NAME_BYTES", "MAX_PAYLOAD", "NO_DATA", "Codec", "Serializer", "check_names", "name_error", "too_long")

# What one command may carry. Redis refuses an argument longer than its ``proto-max-bulk-len`` (512 MB by default,
# 1 MiB at the least), and the link sends its commands in calls of about 1 MiB (``CALL_BYTES``): a set whose name and
# payload fit these limits fits a call on any server, alone if need be.
MAX_NAME_BYTES = 16 * 1024  # a timer's name, UTF-8
MAX_PAYLOAD = 1_000_000  # a payload as encoded (``RedisBackend(max_payload=...)``'s default)


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

    __slots__ = ("_serializer", "max_payload")

    def __init__(self, serializer: Serializer | None, max_payload: int = MAX_PAYLOAD) -> None:
        if serializer is not None and not (
            callable(getattr(serializer, "dumps", None)) and callable(getattr(serializer, "loads", None))
        ):
            raise TypeError(f"serializer must have dumps() and loads() methods, got {type(serializer).__name__}")
        self._serializer = serializer
        self.max_payload = max_payload

    def encode(self, value: Any) -> bytes:
        """The payload as tagged bytes; ``TypeError`` for one the serializer (JSON by default) cannot take,
        ``ValueError`` for one longer than ``max_payload`` encoded."""
        raw = self._encode(value)
        if len(raw) > self.max_payload:
            raise ValueError(
                f"data is {len(raw):,} bytes encoded, more than max_payload={self.max_payload:,} "
                f"(RedisBackend(max_payload=...)): {shown(value)}"
            )
        return raw

    def _encode(self, value: Any) -> bytes:
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


def check_names(names: list[str]) -> None:
    """Each name of a set must fit a call to the server, at most ``MAX_NAME_BYTES`` in UTF-8 (``ValueError`` at the
    call otherwise)."""
    for name in names:
        if too_long(name):
            raise name_error(name)


def name_error(name: str) -> ValueError:
    """The error for a name longer than ``MAX_NAME_BYTES``."""
    return ValueError(
        f"timer name is {len(name.encode('utf-8', 'surrogatepass')):,} bytes in UTF-8, more than the "
        f"{MAX_NAME_BYTES:,} a Redis-backed manager takes: {shown(name)}"
    )


def too_long(name: str) -> bool:
    """Whether ``name`` is longer than ``MAX_NAME_BYTES`` in UTF-8 (at most 4 bytes a character: most names are
    decided without encoding them)."""
    return len(name) > MAX_NAME_BYTES // 4 and len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES
