"""kosoku's command line, with one fix to its port of Autobahn sections 12 and 13.

Those cases hash each echoed message as bytes, as Autobahn did on Python 2,
but kosoku hands a case an uncompressed message as ``str`` (binary decoded as
Latin-1, Python 2's ``str`` carried over; text decoded as UTF-8) and only a
compressed one as ``bytes``. A peer that sends some messages uncompressed, as
RFC 7692 allows and as ours does for messages that would not shrink, then
fails every such case on the hashing, whatever it sent. Encoding the str back
the way it was decoded gives the case the exact bytes that came off the wire,
so the cases judge what they were written to judge.
"""

from __future__ import annotations

from typing import Any

from kosoku._cli import main
from kosoku.cases import CASES


def _as_bytes(handler: Any) -> Any:
    def on_message(self: Any, message: str | bytes, binary: bool) -> Any:
        if isinstance(message, str):
            message = message.encode("latin-1" if binary else "utf-8")
        return handler(self, message, binary)
    return on_message


for _id, _case in CASES.items():
    if _id.startswith(("12.", "13.")):
        _case.onMessage = _as_bytes(_case.onMessage)

if __name__ == "__main__":
    main()
