"""h2's state machines stepped in compiled code, for `h2_connection.Connection`.

h2 checks each stream's and the connection's every move against its transition tables
in `process_input`: a Python call, a type check, a table lookup and, for most moves a
request makes, a second Python call to a transition function that sets a flag or two
and makes an event. About ten of those a request were a third of the HTTP/2 codec's
time. The functions here look up the same tables (h2's own dicts) and do the transition
functions a request and its response pass through inline, when their assertions hold,
so they cannot fail; every other move and every invalid one goes to h2's
`process_input` with the machine untouched, which raises h2's errors and sets h2's
states. Also here: h2's small helpers on the same path (settings lookups, window
accounting, header scans), with h2's results and errors. tests/h2/test_fast_send.py
compares states, events, streams and errors with stock h2 for each of them.
"""

from __future__ import annotations

from typing import Any, Final

import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h2.stream

_MAX_CONCURRENT_STREAMS: Final = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
# h2's own transition tables.
CONNECTION_TRANSITIONS: Final[dict[Any, Any]] = h2.connection.H2ConnectionStateMachine._transitions
_STREAM_TRANSITIONS: Final[dict[Any, Any]] = h2.stream._transitions


def _hash_by_identity(*classes: type) -> None:
    """Give h2's plain Enum classes C-level identity hashing, and re-key h2's tables.

    h2's state machines look up `(state, input)` in a dict on every transition, about
    eleven a request, and a plain Enum's `__hash__` is a Python function
    (`hash(self._name_)`): about 4% of the codec's time. Enum members are singletons
    compared by identity (Enum defines no `__eq__`), so hashing them by identity keeps
    every equal pair's hashes equal. The two transition tables were built with the old
    hashes and are re-keyed (a tuple's hash is not cached, so re-inserting rehashes).
    """
    for enum_class in classes:
        enum_class.__hash__ = object.__hash__  # type: ignore[assignment]
    tables: tuple[dict[Any, Any], ...] = (
        h2.connection.H2ConnectionStateMachine._transitions,
        h2.stream._transitions,
    )
    for table in tables:
        items = list(table.items())
        table.clear()
        for key, value in items:
            table[key] = value


_hash_by_identity(
    h2.connection.ConnectionState, h2.connection.ConnectionInputs, h2.stream.StreamInputs
)


# (state -> the inputs that leave it unchanged without a transition function): every
# input a request and its response make on an open connection. connection_step skips
# the table lookup for those. Built from h2's table after the re-keying above.
_CONNECTION_STAYS: Final[dict[Any, frozenset[Any]]] = {
    state: frozenset(
        input_
        for (from_state, input_), (func, target) in CONNECTION_TRANSITIONS.items()
        if from_state is state and func is None and target is state
    )
    for state in h2.connection.ConnectionState
}

_Machine: Final = h2.stream.H2StreamStateMachine
_REQUEST_RECEIVED: Final = _Machine.request_received
_RESPONSE_RECEIVED: Final = _Machine.response_received
_HALF_CLOSED: Final = _Machine.stream_half_closed
_ENDED: Final = _Machine.stream_ended
_REQUEST_SENT: Final = _Machine.request_sent
_RESPONSE_SENT: Final = _Machine.response_sent
_SENT_END_STREAM: Final = _Machine.send_end_stream
_DATA_RECEIVED: Final = _Machine.data_received
_WINDOW_UPDATED: Final = _Machine.window_updated
_RECV_DATA: Final = h2.stream.StreamInputs.RECV_DATA
_RECV_WINDOW_UPDATE: Final = h2.stream.StreamInputs.RECV_WINDOW_UPDATE
_CLOSED_BY_RECV_END: Final = h2.stream.StreamClosedBy.RECV_END_STREAM
_CLOSED_BY_SEND_END: Final = h2.stream.StreamClosedBy.SEND_END_STREAM
_STREAM_OPEN: Final[list[bool]] = h2.stream.STREAM_OPEN


# h2's events are dataclasses, whose generated __init__ runs as interpreted Python
# (about 2,500 instructions an event, a dozen events a gRPC call per sidecar). These
# make the same objects: the class's __new__, then each field in the order __init__
# assigns them (tests/h2/test_fast_send.py compares them with h2's own).
_LAZY: Final = h2.events._LAZY_INIT
_StreamEnded: Final = h2.events.StreamEnded
_DataReceived: Final = h2.events.DataReceived
_WindowUpdated: Final = h2.events.WindowUpdated
_RequestReceived: Final = h2.events.RequestReceived
_ResponseReceived: Final = h2.events.ResponseReceived
_TrailersReceived: Final = h2.events.TrailersReceived


def _event(cls: Any, stream_id: int) -> Any:
    event: Any = cls.__new__(cls)
    event.stream_id = stream_id
    return event


def stream_ended(stream_id: int) -> Any:
    return _event(_StreamEnded, stream_id)


def headers_event(cls: Any, stream_id: int) -> Any:
    """RequestReceived, ResponseReceived or TrailersReceived."""
    event = _event(cls, stream_id)
    event.headers = _LAZY
    event.stream_ended = None
    event.priority_updated = None
    return event


def data_received(stream_id: int) -> Any:
    event = _event(_DataReceived, stream_id)
    event.data = _LAZY
    event.flow_controlled_length = _LAZY
    event.stream_ended = None
    return event


def window_updated(stream_id: int, delta: Any) -> Any:
    event = _event(_WindowUpdated, stream_id)
    event.delta = delta
    return event


def connection_step(machine: Any, input_: Any) -> list[Any]:
    """h2's H2ConnectionStateMachine.process_input: the transitions without a function
    (every one a request makes once the connection is open) step here; the rest, and every
    invalid input, go to h2's method."""
    state = machine.state
    if input_ in _CONNECTION_STAYS[state]:
        return []
    entry = CONNECTION_TRANSITIONS.get((state, input_))
    if entry is None or entry[0] is not None:
        events: list[Any] = machine.process_input(input_)
        return events
    machine.state = entry[1]
    return []


def received(machine: Any, input_: Any) -> list[Any]:
    """h2's H2StreamStateMachine.process_input for a received HEADERS or END_STREAM.

    The same table, target state and events; the transition functions a request or
    response passes through are done inline when their assertions hold (so they cannot
    fail), and everything else, including every invalid input, goes to h2's method with
    the machine untouched. tests/h2/test_fast_send.py compares the states and events with
    stock h2's.
    """
    entry = _STREAM_TRANSITIONS.get((machine.state, input_))
    if entry is None:
        events: list[Any] = machine.process_input(input_)  # h2's ProtocolError
        return events
    func, target = entry
    stream_id = machine.stream_id
    if func is None:
        machine.state = target
        return []
    if func is _HALF_CLOSED:
        machine.state = target
        return [stream_ended(stream_id)]
    if func is _ENDED:
        machine.state = target
        machine.stream_closed_by = _CLOSED_BY_RECV_END
        return [stream_ended(stream_id)]
    if func is _REQUEST_RECEIVED and not machine.headers_received and not machine.trailers_received:
        machine.state = target
        machine.client = False
        machine.headers_received = True
        return [headers_event(_RequestReceived, stream_id)]
    if func is _RESPONSE_RECEIVED and not machine.trailers_received:
        if not machine.headers_received:
            if machine.client is True:
                machine.state = target
                machine.headers_received = True
                return [headers_event(_ResponseReceived, stream_id)]
        else:
            machine.state = target
            machine.trailers_received = True
            return [headers_event(_TrailersReceived, stream_id)]
    events = machine.process_input(input_)
    return events


def sent(machine: Any, input_: Any) -> None:
    """`received`'s counterpart for what we send: the events h2 returns for those are
    its private bookkeeping ones, which h2's own send methods discard too."""
    entry = _STREAM_TRANSITIONS.get((machine.state, input_))
    if entry is not None:
        func, target = entry
        if func is None:
            machine.state = target
            return
        if func is _SENT_END_STREAM:
            machine.state = target
            machine.stream_closed_by = _CLOSED_BY_SEND_END
            return
        if func is _RESPONSE_SENT and machine.client is False:
            if not machine.headers_sent:
                machine.state = target
                machine.headers_sent = True
                return
            if not machine.trailers_sent:
                machine.state = target
                machine.trailers_sent = True
                return
        if func is _REQUEST_SENT:
            machine.state = target
            machine.client = True
            machine.headers_sent = True
            return
    machine.process_input(input_)  # h2's transition function, or its ProtocolError


def data_target(machine: Any) -> Any:
    """The state a received DATA frame moves `machine` to, when h2's transition for it is
    `data_received` and that cannot fail (headers came first); None otherwise, for h2."""
    entry = _STREAM_TRANSITIONS.get((machine.state, _RECV_DATA))
    if entry is None or entry[0] is not _DATA_RECEIVED or not machine.headers_received:
        return None
    return entry[1]


def window_update_target(machine: Any) -> Any:
    """The state a received WINDOW_UPDATE moves `machine` to, when h2's transition for it
    is `window_updated` (an open or reserved stream); None otherwise, for h2."""
    entry = _STREAM_TRANSITIONS.get((machine.state, _RECV_WINDOW_UPDATE))
    if entry is None or entry[0] is not _WINDOW_UPDATED:
        return None
    return entry[1]


def consume(window: Any, size: int) -> None:
    """h2's WindowManager.window_consumed."""
    window.current_window_size -= size
    if window.current_window_size < 0:
        raise h2.exceptions.FlowControlError("Flow control window shrunk below 0")


def window_processed(window: Any, size: int) -> int:
    """h2's WindowManager.process_bytes: `size` more bytes taken; the increment to send
    back now (0 for none), by h2's rule (half the window, or a little of an empty one)."""
    processed: int = window._bytes_processed + size
    window._bytes_processed = processed
    if not processed:
        return 0
    largest: int = window.max_window_size
    current: int = window.current_window_size
    increment = 0
    if (current == 0 and processed > min(1024, largest // 4)) or processed >= largest // 2:
        increment = min(processed, largest - current)
        window._bytes_processed = 0
    window.current_window_size = current + increment
    return increment


def is_open(machine: Any) -> bool:
    """h2's H2Stream.open: the stream counts against the concurrent-stream limit."""
    return bool(_STREAM_OPEN[machine.state])


def setting(settings: Any, code: Any) -> int:
    """h2's Settings[code] (its properties' one line) without the two Python calls."""
    value: int | None = settings._settings[code][0]
    if value is None:
        raise KeyError(code)
    return value


def max_streams(settings: Any) -> int:
    """h2's Settings.max_concurrent_streams: unlimited (2**32 + 1) when never set."""
    entry = settings._settings.get(_MAX_CONCURRENT_STREAMS)
    value: int | None = None if entry is None else entry[0]
    return 2**32 + 1 if value is None else value


# The header lists below are the codec's own: pairs of bytes, from the HPACK decoder in
# raw mode or from the runtime. Typed so, they are walked as C tuples of C bytes; as
# `Any`, each pair was unpacked through the iterator protocol (about a tenth of a
# received HEADERS frame's cost).
Fields = list[tuple[bytes, bytes]]


def informational(headers: Fields) -> bool:
    """h2.utilities.is_informational_response, for the bytes headers this codec uses."""
    for name, value in headers:
        if not name.startswith(b":"):
            return False
        if name == b":status":
            return value.startswith(b"1")
    return False


def method(headers: Fields) -> bytes | None:
    """h2.utilities.extract_method_header, for the bytes headers this codec uses."""
    for name, value in headers:
        if name == b":method":
            return value
    return None


def content_length(headers: Fields) -> int | None:
    """H2Stream._initialize_content_length's parse (same checks, same errors)."""
    content_length: int | None = None
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit():
                raise h2.exceptions.ProtocolError(f"Invalid content-length header: {value!r}")
            parsed = int(value, 10)
            if content_length is None:
                content_length = parsed
            elif parsed != content_length:
                raise h2.exceptions.ProtocolError(
                    f"Conflicting content-length headers: {content_length} and {parsed}"
                )
    return content_length
