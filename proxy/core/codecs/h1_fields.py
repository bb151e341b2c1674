"""What the llhttp codecs make of header fields.

Each field name's kind (what a proxy must do with it), a connection's fields
remembered by position (peers repeat them, so a repeat costs a compare), and the
framing fields read into a length. Shared by the server and client codecs
(`h1_llhttp_server`, `h1_llhttp_client`).
"""

from __future__ import annotations

from typing import Final

from proxy.core.headers import NOTED_FIELDS

# What the codecs do with a field, by lower-cased name: the noted kinds are the bits of
# messages.HOP_BY_HOP_FIELDS and friends (appended, and noted in the head's `fields`);
# the kinds from CONTENT_LENGTH up are acted on while parsing.
PLAIN: Final = 0
CONTENT_LENGTH: Final = 16  # above every noted bit (messages.ANY_FIELDS)
TRANSFER_ENCODING: Final = 17
HOST: Final = 18
EXPECT: Final = 19
UPGRADE: Final = 20
CONNECTION: Final = 21
_KINDS: Final[dict[bytes, int]] = {
    **NOTED_FIELDS,
    b"content-length": CONTENT_LENGTH,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"host": HOST,
    b"expect": EXPECT,
    b"upgrade": UPGRADE,
    b"connection": CONNECTION,
}

# Header names as llhttp reports them -> (lower-cased, kind), worked out once: most
# peers send the same few names on every message, so a repeat costs one dict lookup.
_FIELDS: Final[dict[bytes, tuple[bytes, int]]] = {}
_FIELDS_MAX: Final = 1024  # bounded: a client inventing names cannot grow it without end


def _field(name: bytes) -> tuple[bytes, int]:
    known = _FIELDS.get(name)
    if known is None:
        lowered = name.lower()
        known = (lowered, _KINDS.get(lowered, PLAIN))
        if len(_FIELDS) < _FIELDS_MAX:
            _FIELDS[name] = known
    return known


_FIELDS_REMEMBERED: Final = 64  # per connection; later fields of a long head go by _field


class Field:
    """A field as llhttp reported it, and what the codecs make of it.

    `pair` is (`name`, `value`) as the one tuple object the head's list holds: typed
    `object` so the compiled code hands it on as it is (a `tuple[bytes, bytes]` value
    is unboxed by mypyc and boxed into a new tuple wherever it is stored).
    """

    __slots__ = ("kind", "line", "name", "pair", "sent_name", "sent_value", "value")

    def __init__(self, sent_name: bytes, sent_value: bytes, line: bytes = b"") -> None:
        self.line = line  # the whole field line, when read off the bytes (RepeatedFields.line)
        self.sent_name = sent_name
        self.sent_value = sent_value
        self.name, self.kind = _field(sent_name)
        self.value = trim(sent_value)
        self.pair: object = (self.name, self.value)


class RepeatedFields:
    """The fields of a connection's previous message, by position.

    Most peers send the same fields in the same order on every message of a
    connection, so the name and value at each position are first compared with the
    ones before them there (a memcmp each) before `_field` hashes the name: about 150
    instructions a field instead of 500. A field that repeats exactly is handed back
    as the same pair object, which saves making and freeing a tuple and lets a head
    built from it find its repeated start by identity (h1_framing.FieldLines).
    """

    __slots__ = ("_entries", "_position")

    def __init__(self) -> None:
        self._entries: list[Field] = []
        self._position = 0

    def begin(self) -> None:
        """A new message: its first field is compared with the last message's first."""
        self._position = 0

    def field(self, name: bytes, value: bytes) -> Field:
        """The field at the next position (read at once: the next message reuses it)."""
        position = self._position
        self._position = position + 1
        entries = self._entries
        if position < len(entries):
            entry = entries[position]
            if entry.sent_name == name:
                if entry.sent_value != value:
                    entry.line = b""  # no longer the line it was read from
                    entry.sent_value = value
                    entry.value = trim(value)
                    entry.pair = (entry.name, entry.value)
                return entry
        return self._keep(position, Field(name, value))

    def line(self, line: bytes) -> Field | None:
        """The field at the next position from its whole line (`name:value`, without the
        CRLF), as read straight off a head; None for a line with no name and colon,
        which llhttp refuses. A line equal to the one at this position before is the
        same entry: one compare for the whole field."""
        position = self._position
        self._position = position + 1
        entries = self._entries
        if position < len(entries):
            entry = entries[position]
            if entry.line == line:
                return entry
        # Compiled loops over a name and the OWS after it: `find` and `lstrip` are
        # Python-level calls (about 700 instructions each).
        size = len(line)
        colon = 0
        while colon < size and line[colon] != 58:
            colon += 1
        if colon == 0 or colon == size:
            return None
        begin = colon + 1
        while begin < size and (line[begin] == 32 or line[begin] == 9):
            begin += 1  # llhttp reports the value without its leading OWS
        name = line[:colon]
        value = line[begin:]
        if position < len(entries):
            entry = entries[position]
            if entry.sent_name == name:
                # The same name with another value (a cookie, a request id): the entry is
                # updated, as in `field`, not made again (its name's kind is known).
                entry.line = line
                entry.sent_value = value
                entry.value = trim(value)
                entry.pair = (entry.name, entry.value)
                return entry
        return self._keep(position, Field(name, value, line))

    def _keep(self, position: int, entry: Field) -> Field:
        """`entry` as the one at `position`, for the next message to compare with."""
        entries = self._entries
        if position < len(entries):
            entries[position] = entry
        elif position < _FIELDS_REMEMBERED:
            entries.append(entry)
        return entry


def framing_field(
    kind: int, value: bytes, length: int | None, chunked: bool
) -> tuple[int | None, bool, bool]:
    """A Content-Length or Transfer-Encoding field taken into the message's framing.

    Returns (length, chunked, refused). Refused: a length that is not a number or
    differs from a repeat's, or a coding other than one plain `chunked` (llhttp lets
    `gzip, chunked` by, and re-framing the body would drop the coding). llhttp has
    refused a length with anything but digits around optional whitespace, and trim
    took the trailing whitespace off, so the digits are read in a compiled loop
    (strip and isdigit were Python-level method calls, about 700 instructions).
    """
    if kind == TRANSFER_ENCODING:
        return length, True, chunked or value.strip().lower() != b"chunked"
    declared = 0 if len(value) else -1
    for index in range(len(value)):
        digit = value[index] - 48
        if not 0 <= digit <= 9:
            declared = -1
            break
        declared = declared * 10 + digit
    if declared < 0 or (length is not None and length != declared):
        return length, chunked, True
    return declared, chunked, False


def trim(value: bytes) -> bytes:
    """The value without trailing SP/HTAB (RFC 9110 section 5.5), which llhttp keeps.

    Checks the last byte first: values rarely end in whitespace, and the check is
    cheaper than calling `rstrip`. The length, not the truth of `value`: mypyc tests a
    bytes object's truth with a generic call.
    """
    size = len(value)
    if size and value[size - 1] in (32, 9):
        return value.rstrip(b" \t")
    return value
