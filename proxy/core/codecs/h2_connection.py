"""h2's connection with this codec's hot paths: the same state machines, less work per frame.

h2 stays the frame layer, the connection and stream state machines, flow control and
every error. `Connection` and `FrameBuffer` override the handful of methods a request
passes through, making the same calls into h2's state in the same order and skipping
work this codec does not need (see `Connection`); the state machines are stepped by
`h2_steps.py`. Kept apart from the codec (`proxy/core/codecs/h2.py`) because these
are subclasses of h2's classes: compiled (`proxy/_compiled.py`) as ordinary Python
classes whose methods are C. With `h2.py`, `h2_steps.py` and `h2_hpack.py`, the only
modules that import h2.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import Any, Final, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import h2.stream
import h2.windows
from h2.utilities import authority_from_headers
from hpack.exceptions import HPACKError, OversizedHeaderListError
from hyperframe.exceptions import InvalidDataError, InvalidFrameError, InvalidPaddingError
from hyperframe.flags import Flags
from hyperframe.frame import (
    DataFrame,
    Frame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    WindowUpdateFrame,
)
from mypy_extensions import mypyc_attr

from proxy.core.codecs import h2_steps as steps

_FRAME_HEADER: Final = struct.Struct(">HBBBL").pack  # length (24 bits), type, flags, stream id
_END_STREAM: Final = 0x1
_END_HEADERS: Final = 0x4
_ACK: Final = 0x1
_CONN_SEND_HEADERS: Final = h2.connection.ConnectionInputs.SEND_HEADERS
_CONN_SEND_DATA: Final = h2.connection.ConnectionInputs.SEND_DATA
_CONN_RECV_HEADERS: Final = h2.connection.ConnectionInputs.RECV_HEADERS
_CONN_RECV_DATA: Final = h2.connection.ConnectionInputs.RECV_DATA
_CONN_RECV_WINDOW_UPDATE: Final = h2.connection.ConnectionInputs.RECV_WINDOW_UPDATE
_CONN_RECV_PING: Final = h2.connection.ConnectionInputs.RECV_PING
_RECV_HEADERS: Final = h2.stream.StreamInputs.RECV_HEADERS
_RECV_INFORMATIONAL_HEADERS: Final = h2.stream.StreamInputs.RECV_INFORMATIONAL_HEADERS
_RECV_END_STREAM: Final = h2.stream.StreamInputs.RECV_END_STREAM
_SEND_HEADERS: Final = h2.stream.StreamInputs.SEND_HEADERS
_SEND_INFORMATIONAL_HEADERS: Final = h2.stream.StreamInputs.SEND_INFORMATIONAL_HEADERS
_SEND_DATA: Final = h2.stream.StreamInputs.SEND_DATA
_SEND_END_STREAM: Final = h2.stream.StreamInputs.SEND_END_STREAM
# h2's own table: state (an IntEnum, so a list index) -> open (OPEN or half closed).
_OPEN_STATES: Final = h2.stream.STREAM_OPEN
_CLOSED: Final = h2.stream.StreamState.CLOSED
_ordered_set: Final = OrderedDict.__setitem__
_IDLE: Final = h2.stream.StreamState.IDLE
_INITIAL_WINDOW_SIZE: Final = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE
_Machine: Final = h2.stream.H2StreamStateMachine
_Stream: Final = h2.stream.H2Stream
_WindowManager: Final = h2.windows.WindowManager
_TrailersReceived: Final = h2.events.TrailersReceived
_PingReceived: Final = h2.events.PingReceived
_PingAckReceived: Final = h2.events.PingAckReceived


def _decode(decoder: Any, block: bytes) -> Any:
    """h2's _decode_headers (HPACK errors as h2's), in compiled code."""
    try:
        return decoder.decode(block, raw=True)
    except OversizedHeaderListError as e:
        raise h2.exceptions.DenialOfServiceError(f"Oversized header block: {e}") from e
    except (HPACKError, IndexError, TypeError, UnicodeDecodeError) as e:
        raise h2.exceptions.ProtocolError(f"Error decoding header block: {e}") from e


_FlagTable = tuple[frozenset[str], tuple[frozenset[str], ...]]


def _flag_table(cls: type[Frame]) -> _FlagTable:
    """A frame class's flag names, and the names set for each value of the flags byte."""
    defined = [(flag.bit, flag.name) for flag in cls.defined_flags]
    by_bits = tuple(frozenset(name for bit, name in defined if bits & bit) for bits in range(256))
    return frozenset(name for _, name in defined), by_bits


_DATA_FLAGS: Final = _flag_table(DataFrame)
_HEADERS_FLAGS: Final = _flag_table(HeadersFrame)
_PING_FLAGS: Final = _flag_table(PingFrame)
_NO_FLAGS: Final = _flag_table(WindowUpdateFrame)
_PARSE_HEADER: Final = struct.Struct(">HBBBL").unpack_from
_PARSE_WORD: Final = struct.Struct(">L").unpack_from
_LARGEST_WINDOW: Final = 2**31 - 1
_PADDED: Final = 0x8
_PRIORITY: Final = 0x20


def _flags(table: _FlagTable, bits: int) -> Flags:
    flags: Flags = Flags.__new__(Flags)
    flags._valid_flags = table[0]  # type: ignore[assignment]  # read-only: shared per class
    flags._flags = set(table[1][bits])  # each frame's own set: h2 may add to it
    return flags


# Both classes compile as ordinary Python classes (`native_class=False`): their bases are
# h2's, and h2 itself reads and writes their attributes, so mypyc's own attribute layout
# would gain nothing; their methods still compile (proxy/_compiled.py).
@mypyc_attr(native_class=False)
class FrameBuffer(h2.frame_buffer.FrameBuffer):
    """h2's FrameBuffer; DATA, complete HEADERS, WINDOW_UPDATE and PING frames are made
    without hyperframe's constructor chain (Frame, Padding, Priority, Flags: about a
    third of the time spent per received frame) and without copying the 9-byte header
    out of the buffer first.

    The objects are the ones hyperframe's parse_frame_header and parse_body make (same
    class and attributes, checked by tests/h2/test_fast_send.py), in h2's order and with
    h2's errors; padded or prioritised bodies are parsed by hyperframe's parse_body.
    Every other frame, a HEADERS frame that CONTINUATION must complete, anything while
    a header block is open, and anything hyperframe would reject go to h2's method.
    """

    def add_data(self, data: Any) -> None:
        """h2's add_data; once the preface is checked, only the append."""
        if self._preamble_len:
            super().add_data(data)
        else:
            self._data += data

    def __next__(self) -> Frame:
        frame = self.next_frame()
        if frame is None:
            raise StopIteration
        return frame

    def next_frame(self) -> Frame | None:
        """The next whole frame, or None when the buffer holds no more.

        The end of every read is the usual case, so it is a return value rather than
        h2's StopIteration: an exception through compiled code costs a traceback entry.
        """
        data = self._data
        if len(data) < 9:
            return None
        if self._headers_buffer:
            return self._h2_next()
        high, low, kind, bits, stream_id = _PARSE_HEADER(data)
        stream_id &= 0x7FFFFFFF
        length = (high << 8) + low
        if kind == 0x8 and length == 4:
            return self._window_update(stream_id, bits)
        if kind == 0x6 and length == 8 and not stream_id:
            return self._ping(bits)
        frame: DataFrame | HeadersFrame
        if kind == 0x0 and stream_id:
            frame = DataFrame.__new__(DataFrame)
            frame.flags = _flags(_DATA_FLAGS, bits)
            simple = not bits & _PADDED
        elif kind == 0x1 and stream_id and bits & _END_HEADERS:
            frame = HeadersFrame.__new__(HeadersFrame)
            frame.flags = _flags(_HEADERS_FLAGS, bits)
            frame.depends_on = 0
            frame.stream_weight = 0
            frame.exclusive = False
            simple = not bits & (_PADDED | _PRIORITY)
        else:
            return self._h2_next()
        frame.stream_id = stream_id
        frame.pad_length = 0
        if len(data) < length + 9:
            return None
        if length > self.max_frame_size:
            self._validate_frame_length(length)  # raises h2's error
        if simple:
            # hyperframe's parse_body without padding or priority: the payload, whole.
            frame.body_len = length
            frame.data = bytes(data[9 : 9 + length])
        else:
            frame.body_len = 0
            frame.data = b""
            try:
                frame.parse_body(memoryview(data[9 : 9 + length]))
            except InvalidDataError as err:
                raise h2.exceptions.ProtocolError("Received frame with non-compliant data") from err
            except InvalidFrameError as err:
                raise h2.exceptions.FrameDataMissingError("Frame data missing or invalid") from err
        del data[: 9 + length]
        return frame

    def _validate_frame_length(self, length: int) -> None:
        """h2's own check, compiled (h2's __next__ calls it too)."""
        if length > self.max_frame_size:
            raise h2.exceptions.FrameTooLargeError(
                f"Received overlong frame: length {length}, max {self.max_frame_size}"
            )

    def _h2_next(self) -> Frame | None:
        """h2's own __next__ (CONTINUATION, padding, priority, rarer frames, its errors)."""
        try:
            return super().__next__()
        except StopIteration:
            return None

    def _window_update(self, stream_id: int, bits: int) -> Frame | None:
        """A 4-byte WINDOW_UPDATE as hyperframe parses it; an increment it rejects (0, or
        the reserved bit set) goes to h2's method for h2's error."""
        data = self._data
        if len(data) < 13:
            return None
        self._validate_frame_length(4)
        increment: int = _PARSE_WORD(data, 9)[0]
        if not 1 <= increment <= _LARGEST_WINDOW:
            return self._h2_next()
        frame: Any = WindowUpdateFrame.__new__(WindowUpdateFrame)
        frame.stream_id = stream_id
        frame.flags = _flags(_NO_FLAGS, bits)
        frame.body_len = 4
        frame.window_increment = increment
        del data[:13]
        return cast(Frame, frame)

    def _ping(self, bits: int) -> Frame | None:
        """An 8-byte PING on stream 0 as hyperframe parses it."""
        data = self._data
        if len(data) < 17:
            return None
        self._validate_frame_length(8)
        frame: Any = PingFrame.__new__(PingFrame)
        frame.stream_id = 0
        frame.flags = _flags(_PING_FLAGS, bits)
        frame.body_len = 8
        frame.opaque_data = bytes(data[9:17])
        del data[:17]
        return cast(Frame, frame)


@mypyc_attr(native_class=False)
class Connection(h2.connection.H2Connection):
    """h2's connection (4.x) on its hot paths without work this codec does not need.

    h2 remains the frame layer, the connection and stream state machines, flow control
    and every error; the overrides below make the same calls into those, in the same
    order, and skip: repr() of every received frame for a trace log nothing reads (the
    hyperframe repr renders the payload), frame objects and hyperframe serialisation for
    the HEADERS, DATA and END_STREAM frames we send, the inbound and outbound header
    pipelines' bookkeeping while those pipelines are off (as the codec configures
    them), and two property calls per stream when counting open streams.
    tests/h2/test_fast_send.py runs each against stock h2: same bytes, events, states
    and exceptions.
    """

    # How many closed streams h2 remembers per connection, to tell a late frame on one
    # (ignored or answered with RST_STREAM) from a protocol error. h2's 65,536 held
    # about 100 bytes each, so a long-lived connection grew by megabytes (1.3 MB/s under
    # h2load -c8 -m16); RFC 9113 section 5.1 lets frames that arrive "a significant
    # time" after a stream closed be a connection error, and 1,024 streams later is that.
    MAX_CLOSED_STREAMS = 1024

    # h2's attributes this class assigns, declared so that mypy reads them as h2 defines
    # them, not inferred from our assignments (which fails when h2's types are not
    # visible; pyproject.toml puts h2 in the build environment for mypyc).
    outbound_flow_control_window: int
    highest_inbound_stream_id: int
    highest_outbound_stream_id: int

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        # h2 reads it through a Python descriptor each time; it never changes.
        self.client_side: bool = config.client_side
        self.incoming_buffer = FrameBuffer(server=not config.client_side)
        # The direct send paths below do not run h2's outbound header normalisation or
        # validation: they are used only when those are off, as the codec configures them.
        self.fast_send = not (config.normalize_outbound_headers or config.validate_outbound_headers)
        self.fast_receive = not (
            config.normalize_inbound_headers
            or config.validate_inbound_headers
            or isinstance(config.header_encoding, str)
        )

    def data_to_send(self, amount: int | None = None) -> bytes:
        """h2's data_to_send; all of it, as the codec always asks, in compiled code."""
        if amount is not None:
            return super().data_to_send(amount)
        data = bytes(self._data_to_send)
        self._data_to_send = bytearray()
        return data

    def get_next_available_stream_id(self) -> int:
        """h2's, without its debug-log call and config property."""
        highest = self.highest_outbound_stream_id
        stream_id = highest + 2 if highest else (1 if self.client_side else 2)
        if stream_id > self.HIGHEST_ALLOWED_STREAM_ID:
            raise h2.exceptions.NoAvailableStreamIDError("Exhausted allowed stream IDs")
        return stream_id

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None:
        """h2's: the same checks, window accounting, frames and errors, without its
        debug-log calls, and a stream that has closed found without an exception."""
        if stream_id <= 0:
            raise ValueError(f"Stream ID {stream_id} is not valid for acknowledge_received_data")
        if acknowledged_size < 0:
            raise ValueError("Cannot acknowledge negative data")
        frames: list[Frame] = []
        increment = steps.window_processed(
            self._inbound_flow_control_window_manager, acknowledged_size
        )
        if increment:
            frame = WindowUpdateFrame(0)
            frame.window_increment = increment
            frames.append(frame)
        stream = self.streams.get(stream_id)
        if stream is None:
            # h2's _get_stream_by_id: a stream above the highest seen was never opened.
            if stream_id % 2 == int(self.client_side):
                highest = self.highest_outbound_stream_id
            else:
                highest = self.highest_inbound_stream_id
            if stream_id > highest:
                raise h2.exceptions.NoSuchStreamError(stream_id)
        elif steps.is_open(stream.state_machine):
            increment = steps.window_processed(stream._inbound_window_manager, acknowledged_size)
            if increment:
                frame = WindowUpdateFrame(stream_id)
                frame.window_increment = increment
                frames.append(frame)
        self._prepare_for_sending(frames)

    def receive_data(self, data: Any) -> list[h2.events.Event]:
        """h2's receive_data, the same steps and errors, without its trace-log call."""
        events: list[h2.events.Event] = []
        buffer = cast(FrameBuffer, self.incoming_buffer)
        buffer.add_data(data)
        buffer.max_frame_size = self.max_inbound_frame_size
        pending: bytearray = buffer._data
        try:
            while True:
                # WINDOW_UPDATE (a gRPC call brings three), unpadded DATA on a stream
                # that takes it and a complete unpadded HEADERS without priority are
                # applied from the parsed header, as the frame methods below would apply
                # them: no frame object, no dispatch. Anything else, or anything those
                # would refuse, takes the frame path.
                if (
                    len(pending) >= 9
                    and pending[3] in (0x0, 0x1, 0x8)
                    and not buffer._headers_buffer
                ):
                    high, low, kind, bits, stream_id = _PARSE_HEADER(pending)
                    stream_id &= 0x7FFFFFFF
                    if kind == 0x8 and high == 0 and low == 4 and len(pending) >= 13:
                        increment: int = _PARSE_WORD(pending, 9)[0]
                        if 1 <= increment <= _LARGEST_WINDOW:
                            updated = self._window_updated(stream_id, increment)
                            if updated is not None:
                                del pending[:13]
                                events.extend(updated)
                                continue
                    elif kind == 0x0 and stream_id and not bits & _PADDED:
                        end = 9 + (high << 8) + low
                        if len(pending) >= end and end - 9 <= buffer.max_frame_size:
                            found = self._data_target(stream_id)
                            if found is not None:
                                payload = bytes(pending[9:end])
                                del pending[:end]
                                events.extend(
                                    self._data_received(found[0], found[1], payload, bool(bits & 1))
                                )
                                continue
                    elif (
                        kind == 0x1
                        and stream_id
                        and bits & (_END_HEADERS | _PADDED | _PRIORITY) == _END_HEADERS
                        and self.fast_receive
                    ):
                        # A whole header block in one frame (no CONTINUATION to wait for).
                        end = 9 + (high << 8) + low
                        if len(pending) >= end and end - 9 <= buffer.max_frame_size:
                            block = bytes(pending[9:end])
                            del pending[:end]
                            events.extend(self._headers_block(stream_id, bool(bits & 1), block))
                            continue
                frame = buffer.next_frame()
                if frame is None:
                    break
                events.extend(self._receive_frame(frame))
        except InvalidPaddingError as e:
            self._terminate_connection(h2.errors.ErrorCodes.PROTOCOL_ERROR)
            raise h2.exceptions.ProtocolError("Received frame with invalid padding.") from e
        except h2.exceptions.ProtocolError as e:
            self._terminate_connection(e.error_code)
            raise
        return events

    def _receive_frame(self, frame: Frame) -> list[h2.events.Event]:
        events: list[h2.events.Event]
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except (h2.exceptions.StreamClosedError, h2.exceptions.StreamIDTooLowError) as e:
            return self._stream_gone(e)
        self._prepare_for_sending(frames)
        return events

    def _stream_gone(
        self, e: h2.exceptions.StreamClosedError | h2.exceptions.StreamIDTooLowError
    ) -> list[h2.events.Event]:
        """h2's _receive_frame's answer to a frame on a stream that is no more: a stream
        error (RST_STREAM) when it was reset, otherwise the connection's (raised)."""
        if isinstance(e, h2.exceptions.StreamClosedError):
            # Closed by RST_STREAM: a stream error (RST_STREAM again); otherwise the
            # connection's (re-raised).
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = e.error_code
                self._prepare_for_sending([f])
                events: list[h2.events.Event] = e._events
                return events
            raise e
        # A stream already cleaned up, or implicitly closed by a higher one.
        if self._stream_is_closed_by_reset(e.stream_id):
            f = RstStreamFrame(e.stream_id)
            f.error_code = h2.errors.ErrorCodes.STREAM_CLOSED
            self._prepare_for_sending([f])
            return []
        if self._stream_is_closed_by_end(e.stream_id):
            raise h2.exceptions.StreamClosedError(e.stream_id) from e
        raise e

    def _receive_headers_frame(
        self, frame: HeadersFrame
    ) -> tuple[list[Frame], list[h2.events.Event]]:
        """h2's HEADERS handling (connection, then H2Stream.receive_headers) without building
        the validation flags and the header-list copy that its inbound pipeline, switched
        off here, would use. PRIORITY on HEADERS, or that pipeline on, takes h2's method."""
        flags: set[str] = frame.flags._flags  # hyperframe's Flags: its names, without __contains__
        if not self.fast_receive or "PRIORITY" in flags:
            return super()._receive_headers_frame(frame)
        return [], self._headers_received(frame.stream_id, "END_STREAM" in flags, frame.data)

    def _headers_block(self, stream_id: int, end_stream: bool, block: bytes) -> list[Any]:
        """A HEADERS frame from receive_data's lane, with _receive_frame's error handling."""
        try:
            return self._headers_received(stream_id, end_stream, block)
        except (h2.exceptions.StreamClosedError, h2.exceptions.StreamIDTooLowError) as e:
            return self._stream_gone(e)

    def _headers_received(self, stream_id: int, end_stream: bool, block: bytes) -> list[Any]:
        stream = self.streams.get(stream_id)
        client_side = self.client_side
        if stream is None:
            limit = steps.max_streams(self.local_settings)
            value = self._open_streams(0 if client_side else 1)
            if value + 1 > limit:
                raise h2.exceptions.TooManyStreamsError(
                    f"Max inbound streams is {limit}, {value} open"
                )
        headers = _decode(self.decoder, block)
        events = steps.connection_step(self.state_machine, _CONN_RECV_HEADERS)
        if stream is None:
            if client_side or not stream_id % 2:
                stream = self._get_or_create_stream(
                    stream_id, h2.connection.AllowedStreamIDs(not client_side)
                )
            else:
                stream = self._new_stream(stream_id, False)
        # H2Stream.receive_headers, step for step.
        machine = stream.state_machine
        if steps.informational(headers):
            if end_stream:
                raise h2.exceptions.ProtocolError(
                    "Cannot set END_STREAM on informational responses"
                )
            stream_events = steps.received(machine, _RECV_INFORMATIONAL_HEADERS)
        else:
            stream_events = steps.received(machine, _RECV_HEADERS)
        headers_event: Any = stream_events[0]
        if end_stream:
            ended = steps.received(machine, _RECV_END_STREAM)
            headers_event.stream_ended = ended[0]
            stream_events += ended
        if type(headers_event) is _TrailersReceived:
            if not end_stream:
                raise h2.exceptions.ProtocolError("Trailers must have END_STREAM set")
            # The body ends here: it must have been as long as the head said (RFC 9113
            # section 8.1.1). h2 checks this only on a DATA frame that ends the stream, and
            # a short body passed on to HTTP/1 would take the next request for its rest.
            _check_length(stream, True)
        else:
            # H2Stream._initialize_content_length
            if stream.request_method == b"HEAD":
                stream._expected_content_length = 0
            else:
                stream._expected_content_length = steps.content_length(headers)
            if end_stream and not client_side:
                _check_length(stream, True)  # a request whose head says a body follows
        headers_event.headers = headers  # the decoder made this list for this block
        return events + stream_events

    def _receive_data_frame(self, frame: DataFrame) -> tuple[list[Frame], list[h2.events.Event]]:
        """h2's DATA handling (connection, then H2Stream.receive_data), step for step, for
        an unpadded frame on a stream that may take data (`_data_received`). Padding, an
        unknown or closed stream, or a stream that may not take data here takes h2's
        method, untouched."""
        flags: set[str] = frame.flags._flags
        found = None if "PADDED" in flags else self._data_target(frame.stream_id)
        if found is None:
            return super()._receive_data_frame(frame)
        return [], self._data_received(found[0], found[1], frame.data, "END_STREAM" in flags)

    def _data_target(self, stream_id: int) -> tuple[Any, Any] | None:
        """The stream DATA on `stream_id` goes to and the state it moves the stream to, when
        h2's transition for it is the plain data_received; None otherwise."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return None
        target = steps.data_target(stream.state_machine)
        return None if target is None else (stream, target)

    def _data_received(
        self, stream: Any, target: Any, data: bytes, end_stream: bool
    ) -> list[h2.events.Event]:
        size = len(data)  # DataFrame.flow_controlled_length without padding
        machine = stream.state_machine
        events = steps.connection_step(self.state_machine, _CONN_RECV_DATA)
        steps.consume(self._inbound_flow_control_window_manager, size)
        machine.state = target
        data_event: Any = steps.data_received(machine.stream_id)
        stream_events: list[Any] = [data_event]
        steps.consume(stream._inbound_window_manager, size)
        # H2Stream._track_content_length
        actual = stream._actual_content_length + size
        stream._actual_content_length = actual
        _check_length(stream, end_stream)
        if end_stream:
            ended = steps.received(machine, _RECV_END_STREAM)
            data_event.stream_ended = ended[0]
            stream_events += ended
        data_event.data = data
        data_event.flow_controlled_length = size
        return events + stream_events

    def _receive_window_update_frame(
        self, frame: WindowUpdateFrame
    ) -> tuple[list[Frame], list[h2.events.Event]]:
        """h2's WINDOW_UPDATE handling, step for step, where it cannot fail (`_window_updated`);
        anything else takes h2's method, untouched."""
        events = self._window_updated(frame.stream_id, frame.window_increment)
        if events is None:
            return super()._receive_window_update_frame(frame)
        return [], events

    def _window_updated(self, stream_id: int, increment: int) -> list[h2.events.Event] | None:
        """A WINDOW_UPDATE for the connection's window, or an open stream's, with room for
        the increment: h2's steps and events. None, with nothing changed, for anything
        else (a closed or unknown stream, a window that would overflow)."""
        if not stream_id:
            window = self.outbound_flow_control_window + increment
            if window > _LARGEST_WINDOW:
                return None
            events = steps.connection_step(self.state_machine, _CONN_RECV_WINDOW_UPDATE)
            self.outbound_flow_control_window = window
            events.append(steps.window_updated(0, increment))
            return events
        stream = self.streams.get(stream_id)
        if stream is None:
            return None
        machine = stream.state_machine
        target = steps.window_update_target(machine)
        window = stream.outbound_flow_control_window + increment
        if target is None or window > _LARGEST_WINDOW:
            return None
        events = steps.connection_step(self.state_machine, _CONN_RECV_WINDOW_UPDATE)
        machine.state = target
        event: Any = steps.window_updated(stream_id, increment)
        stream.outbound_flow_control_window = window
        events.append(event)
        return events

    def _receive_ping_frame(self, frame: PingFrame) -> tuple[list[Frame], list[h2.events.Event]]:
        """h2's PING handling; the ACK for a PING written as bytes, not built as a frame
        (hyperframe accepts only 8-byte PINGs, so its opaque data is those 8 bytes)."""
        events = steps.connection_step(self.state_machine, _CONN_RECV_PING)
        opaque: bytes = frame.opaque_data
        if "ACK" in frame.flags._flags:
            events.append(_PingAckReceived(ping_data=opaque))
        else:
            events.append(_PingReceived(ping_data=opaque))
            out: bytearray = self._data_to_send
            out += _FRAME_HEADER(0, 8, 0x6, _ACK, 0)
            out += opaque
        return [], events

    def _new_stream(self, stream_id: int, outbound: bool) -> Any:
        """h2's _begin_new_stream for an odd stream id: one a client opens on our server
        side (inbound), or one our client side opens (outbound). The H2Stream is built
        attribute by attribute as its constructor does, without the debug-log calls and
        settings properties on the way (tests/h2/test_fast_send.py compares every
        attribute with a stream stock h2 made)."""
        highest = self.highest_outbound_stream_id if outbound else self.highest_inbound_stream_id
        if stream_id <= highest:
            raise h2.exceptions.StreamIDTooLowError(stream_id, highest)
        machine: Any = _Machine.__new__(_Machine)
        machine.state = _IDLE
        machine.stream_id = stream_id
        machine.client = None
        machine.headers_sent = None
        machine.trailers_sent = None
        machine.headers_received = None
        machine.trailers_received = None
        machine.stream_closed_by = None
        stream: Any = _Stream.__new__(_Stream)
        stream.state_machine = machine
        stream.stream_id = stream_id
        stream.request_method = None
        stream.outbound_flow_control_window = steps.setting(
            self.remote_settings, _INITIAL_WINDOW_SIZE
        )
        stream._inbound_window_manager = _WindowManager(
            steps.setting(self.local_settings, _INITIAL_WINDOW_SIZE)
        )
        stream._expected_content_length = None
        stream._actual_content_length = 0
        stream._authority = None
        stream.config = self.config
        stream.max_outbound_frame_size = self.max_outbound_frame_size
        self.streams[stream_id] = stream
        if outbound:
            self.highest_outbound_stream_id = stream_id
        else:
            self.highest_inbound_stream_id = stream_id
        return stream

    def _open_streams(self, remainder: int) -> int:
        """h2's count of open streams of one parity (dropping closed ones as it goes), with
        the states compared directly instead of through two properties per stream: h2
        counts on every new stream, so this runs once per request over all streams."""
        count = 0
        closed: list[int] = []
        for stream_id, stream in self.streams.items():
            state = stream.state_machine.state
            if _OPEN_STATES[state]:
                if stream_id % 2 == remainder:
                    count += 1
            elif state is _CLOSED:
                closed.append(stream_id)
        if closed:
            # h2's SizeLimitDict trims itself after every insertion; once after all of
            # them leaves the same entries (ids only grow, none is inserted twice).
            history: Any = self._closed_streams
            streams = self.streams
            for stream_id in closed:
                _ordered_set(history, stream_id, streams.pop(stream_id).closed_by)
            limit: int | None = history._size_limit  # SizeLimitDict._check_size_limit
            if limit is not None:
                while len(history) > limit:
                    history.popitem(last=False)
        return count

    def _prepare_for_sending(self, frames: list[Frame]) -> None:
        if frames:
            out: bytearray = self._data_to_send
            if len(frames) == 1:
                out += frames[0].serialize()
            else:
                out += b"".join([frame.serialize() for frame in frames])

    # h2 builds a HeadersFrame or DataFrame object per frame (flags as a set of names,
    # padding and priority mixins), normalises and re-encodes the header list, and
    # serialises it again: about a third of the codec's time per request. The two
    # methods below make the same state transitions, in the same order, with the same
    # errors, and write the frame bytes directly. Anything unusual (priority, padding,
    # h2's header normalisation or validation switched on) takes h2's own method.
    # tests/h2/test_fast_send.py compares their output with stock h2's byte for byte.

    def send_headers(
        self,
        stream_id: int,
        headers: Any,
        end_stream: bool = False,
        priority_weight: int | None = None,
        priority_depends_on: int | None = None,
        priority_exclusive: bool | None = None,
    ) -> None:
        if (
            not self.fast_send
            or priority_weight is not None
            or priority_depends_on is not None
            or priority_exclusive is not None
            or type(headers) is not list
        ):
            super().send_headers(
                stream_id,
                headers,
                end_stream,
                priority_weight,
                priority_depends_on,
                priority_exclusive,
            )
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            # A new stream (the client side's requests): h2's limit check, then the stream.
            limit = steps.max_streams(self.remote_settings)
            value = self._open_streams(1 if self.client_side else 0)
            if value + 1 > limit:
                raise h2.exceptions.TooManyStreamsError(
                    f"Max outbound streams is {limit}, {value} open"
                )
            steps.connection_step(self.state_machine, _CONN_SEND_HEADERS)
            if self.client_side and stream_id % 2:
                stream = self._new_stream(stream_id, True)
            else:
                stream = self._get_or_create_stream(
                    stream_id, h2.connection.AllowedStreamIDs(self.client_side)
                )
        else:
            steps.connection_step(self.state_machine, _CONN_SEND_HEADERS)
        machine = stream.state_machine
        input_ = _SEND_HEADERS
        if not machine.client and steps.informational(headers):
            if end_stream:
                raise h2.exceptions.ProtocolError(
                    "Cannot set END_STREAM on informational responses."
                )
            input_ = _SEND_INFORMATIONAL_HEADERS
        steps.sent(machine, input_)
        block = self.encoder.encode(headers)
        if end_stream:
            steps.sent(machine, _SEND_END_STREAM)
        if machine.trailers_sent and not end_stream:
            raise h2.exceptions.ProtocolError("Trailers must have END_STREAM set.")
        if machine.client and stream._authority is None:
            stream._authority = authority_from_headers(headers)
        stream.request_method = steps.method(headers)
        size = len(block)
        limit = stream.max_outbound_frame_size or 0
        end_flag = _END_STREAM if end_stream else 0
        out: bytearray = self._data_to_send
        if size <= limit:
            out += _FRAME_HEADER(size >> 8, size & 0xFF, 0x1, end_flag | _END_HEADERS, stream_id)
            out += block
            return
        # HEADERS then CONTINUATION frames; END_HEADERS on the last (RFC 9113 section 6.10).
        for offset in range(0, size, limit):
            chunk = block[offset : offset + limit]
            last = _END_HEADERS if offset + limit >= size else 0
            kind, flags = (0x1, end_flag | last) if offset == 0 else (0x9, last)
            out += _FRAME_HEADER(len(chunk) >> 8, len(chunk) & 0xFF, kind, flags, stream_id)
            out += chunk

    def end_stream(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or not self.fast_send:
            super().end_stream(stream_id)  # NoSuchStreamError or StreamClosedError
            return
        steps.connection_step(self.state_machine, _CONN_SEND_DATA)
        steps.sent(stream.state_machine, _SEND_END_STREAM)
        out: bytearray = self._data_to_send
        out += _FRAME_HEADER(0, 0, 0x0, _END_STREAM, stream_id)

    def send_data(
        self,
        stream_id: int,
        data: bytes | memoryview,
        end_stream: bool = False,
        pad_length: Any = None,
    ) -> None:
        if pad_length is not None or not self.send_data_now(stream_id, data, end_stream):
            super().send_data(stream_id, data, end_stream, pad_length)  # or h2's error

    def send_data_now(self, stream_id: int, data: bytes | memoryview, end_stream: bool) -> bool:
        """send_data when one unpadded frame within both windows carries it all; False,
        with nothing done, when it does not (the codec then queues, h2 then refuses)."""
        stream = self.streams.get(stream_id)
        size = len(data)
        if (
            stream is None
            or size > self.outbound_flow_control_window
            or size > stream.outbound_flow_control_window
            or size > self.max_outbound_frame_size
        ):
            return False
        steps.connection_step(self.state_machine, _CONN_SEND_DATA)
        machine = stream.state_machine
        steps.sent(machine, _SEND_DATA)
        if end_stream:
            steps.sent(machine, _SEND_END_STREAM)
        stream.outbound_flow_control_window -= size
        self.outbound_flow_control_window -= size
        out = self._data_to_send
        out += _FRAME_HEADER(
            size >> 8, size & 0xFF, 0x0, _END_STREAM if end_stream else 0, stream_id
        )
        out += data
        return True


def _check_length(stream: Any, ended: bool) -> None:
    """H2Stream._track_content_length's check: no more body than the content-length
    said, and, once the stream has ended, no less."""
    expected = stream._expected_content_length
    actual = stream._actual_content_length
    if expected is not None and (expected < actual or (ended and expected != actual)):
        raise h2.exceptions.InvalidBodyLengthError(expected, actual)
