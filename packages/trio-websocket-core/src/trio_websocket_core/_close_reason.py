"""Close codes and the reason a connection ended (RFC 6455 section 7.4)."""

from __future__ import annotations

from wsproto.frame_protocol import CloseReason as _Code

__all__ = ["CloseReason", "check_sendable_close_code", "is_wire_close_code"]

# 1014 is registered with IANA after RFC 6455; wsproto's enum does not know it.
_EXTRA_NAMES = {1014: "BAD_GATEWAY"}


def _code_name(code: int) -> str:
    try:
        return _Code(code).name
    except ValueError:
        pass
    if code in _EXTRA_NAMES:
        return _EXTRA_NAMES[code]
    if 1000 <= code <= 2999:
        return "RFC_RESERVED"
    if 3000 <= code <= 3999:
        return "IANA_RESERVED"
    if 4000 <= code <= 4999:
        return "PRIVATE_RESERVED"
    return "INVALID_CODE"  # as 0.12.2 named it


def is_wire_close_code(code: int) -> bool:
    """Whether a close frame may carry this code (RFC 6455 7.4, plus 1012-1014 registered later)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def check_sendable_close_code(code: int) -> None:
    """Refuse codes a peer would treat as a protocol error, before they hit the wire."""
    if not is_wire_close_code(code):
        raise ValueError(
            f"close code {code} cannot be sent: use 1000-1003, 1007-1014 or 3000-4999"
        )


class CloseReason:
    """Why a WebSocket connection closed: the close code, its name and the peer's reason text.

    Codes that never travel on the wire are used locally too: 1005 when the
    peer's close frame carried no code, 1006 when the connection was lost
    without a closing handshake.
    """

    __slots__ = ("_code", "_name", "_reason")

    def __init__(self, code: int, reason: str | None) -> None:
        self._code = int(code)
        self._name = _code_name(self._code)
        self._reason = reason

    @property
    def code(self) -> int:
        """The numeric close code."""
        return self._code

    @property
    def name(self) -> str:
        """The close code's symbolic name, such as ``NORMAL_CLOSURE``."""
        return self._name

    @property
    def reason(self) -> str | None:
        """The free-form reason text, or ``None`` if there was none."""
        return self._reason

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CloseReason):
            return NotImplemented
        return (self._code, self._reason) == (other._code, other._reason)

    def __hash__(self) -> int:
        return hash((self._code, self._reason))

    def __repr__(self) -> str:
        return f"<CloseReason code={self._code} name={self._name} reason={self._reason!r}>"
