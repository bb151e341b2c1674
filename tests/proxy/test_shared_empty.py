"""The shared empty lists an exchange and a message start with are never added to in place.

`messages.NO_FIELDS` and the exchange's `_NOTHING_HELD` and `_NO_FLAGS` stand for "none
yet" in every message and exchange at once (a list each would be made and freed per
request). Adding to one in place would hand the item to every later exchange, so the
attributes that may hold them are only ever added to through the Exchange methods
(add_flag, hold_for_upstream, hold_for_tunnel) or replaced: checked here in the source.
"""

from __future__ import annotations

import re
from pathlib import Path

PROXY = Path(__file__).resolve().parents[2] / "proxy"
IN_PLACE = re.compile(
    r"\.(flags|upstream_buffer|tunnel_pending|_?trailers|response_trailers)\s*"
    r"(\.(append|extend|insert)\(|\+=\s*[\[(])"
)
# The places that add to a list they have just made their own (a fresh one).
ALLOWED = {
    ("runtime/exchange.py", "self.flags.append(flag)"),
    ("runtime/exchange.py", "self.upstream_buffer.append(data)"),
    ("runtime/exchange.py", "self.tunnel_pending.append(data)"),
    ("core/codecs/h1_llhttp_server.py", "self._trailers.append((name, value))"),
    ("core/codecs/h1_llhttp_client.py", "self._trailers.append((field.name, field.value))"),
}


def test_shared_empty_lists_are_only_added_to_through_their_owners() -> None:
    found = set()
    for path in PROXY.rglob("*.py"):
        for line in path.read_text().splitlines():
            if IN_PLACE.search(line):
                found.add((str(path.relative_to(PROXY)), line.strip()))
    assert found <= ALLOWED, sorted(found - ALLOWED)
    assert found  # the pattern still matches the owners' own appends
