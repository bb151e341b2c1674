"""Reading the server name from a ClientHello (proxy.core.tls_hello).

The hellos are real: OpenSSL, through Python's ssl module, writes them into a memory BIO
as it would onto a socket (TLS 1.3 and 1.2 clients, with and without a name). The relay
test with a real TLS server through the proxy is in test_tcp.py.
"""

from __future__ import annotations

import contextlib
import functools
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core import tls_hello
from proxy.core.tls_hello import MORE, NO_NAME, ClientHelloReader, read_server_name


@functools.cache  # a context loads the system's CA store: once per shape is enough
def client_hello(
    server_hostname: str | None, maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
) -> bytes:
    """What an OpenSSL client sends first, as it would put it on the wire."""
    context = ssl.create_default_context()
    context.check_hostname = server_hostname is not None
    if server_hostname is None:
        context.verify_mode = ssl.CERT_NONE
    context.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with contextlib.suppress(ssl.SSLWantReadError):  # waits for the server; the hello is out
        tls.do_handshake()
    return outgoing.read()


def in_two_records(hello: bytes) -> bytes:
    """The same handshake message split over two TLS records, as RFC 8446 allows."""
    payload = hello[5:]
    middle = len(payload) // 2
    header = hello[:3]
    return b"".join(
        header + len(part).to_bytes(2, "big") + part
        for part in (payload[:middle], payload[middle:])
    )


def test_the_name_a_tls_13_and_a_tls_12_client_ask_for() -> None:
    for maximum in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        hello = client_hello("shop.example.com", maximum)
        assert read_server_name(hello) == (True, "shop.example.com")


def test_it_waits_for_the_whole_hello_and_then_decides() -> None:
    hello = client_hello("api.example.com")
    for end in range(len(hello)):
        assert read_server_name(hello[:end]) == MORE, end
    # What follows the hello (the client's early data, say) changes nothing.
    assert read_server_name(hello + b"\x17\x03\x03\x00\x05hello") == (True, "api.example.com")


def test_a_hello_over_two_records() -> None:
    split = in_two_records(client_hello("api.example.com"))
    assert read_server_name(split) == (True, "api.example.com")
    assert read_server_name(split[:-1]) == MORE


def test_names_are_lower_case_and_hellos_without_one_say_so() -> None:
    assert read_server_name(client_hello("Shop.Example.COM")) == (True, "shop.example.com")
    assert read_server_name(client_hello(None)) == NO_NAME  # no server_name extension
    # A client that dials an address sends no name (RFC 6066: host names only).
    assert read_server_name(client_hello("127.0.0.1")) == NO_NAME


def test_what_is_not_a_client_hello_is_decided_at_once() -> None:
    assert read_server_name(b"GET / HTTP/1.1\r\n") == NO_NAME
    assert read_server_name(b"\x16\x01") == NO_NAME  # not TLS's record version
    assert read_server_name(b"\x00\x01binary") == NO_NAME
    hello = client_hello("shop.example.com")
    # A handshake record holding another message (a ServerHello, say).
    assert read_server_name(hello[:5] + b"\x02" + hello[6:]) == NO_NAME
    # A record longer than TLS allows, and a hello larger than anything worth reading.
    assert read_server_name(b"\x16\x03\x01\x48\x01" + hello[5:]) == NO_NAME
    assert read_server_name(hello[:5] + b"\x01\x7f\xff\xff" + hello[9:]) == NO_NAME


def test_a_name_with_bytes_no_host_name_has_is_not_logged() -> None:
    hello = client_hello("shop.example.com")
    at = hello.index(b"shop.example.com")
    assert read_server_name(hello[:at] + b'shop"example\ncom' + hello[at + 16 :]) == NO_NAME


def test_the_reader_fed_a_byte_at_a_time_reads_only_whole_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client may trickle its hello; reading it all again at every byte would make that
    quadratic, so the reader reads once per completed record (and once per header)."""
    reads = []
    real = tls_hello.read_server_name

    def counted(data: bytes) -> tuple[bool, str | None]:
        reads.append(len(data))
        return real(data)

    monkeypatch.setattr(tls_hello, "read_server_name", counted)
    split = in_two_records(client_hello("api.example.com"))
    reader = ClientHelloReader()
    for index in range(len(split)):
        done = reader.feed(split[index : index + 1])
        assert done == (index == len(split) - 1)
    assert reader.server_name == "api.example.com"
    assert len(reads) == 5, reads  # first byte, two headers, two records: not 500 reads
    assert reader.feed(b"more") and reader.server_name == "api.example.com"


def test_the_reader_gives_up_on_what_is_not_tls_at_the_first_byte() -> None:
    reader = ClientHelloReader()
    assert not reader.feed(b"")
    assert reader.feed(b"\x00binary") and reader.server_name is None


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_no_bytes_make_it_raise(data: st.DataObject) -> None:
    """Random bytes, and real hellos with bytes changed, cut or added: always an answer."""
    hello = client_hello(data.draw(st.sampled_from(["a.example", "shop.example.com", None])))
    shape = data.draw(st.sampled_from(["random", "mutated", "cut", "tls-random"]))
    if shape == "random":
        sample = data.draw(st.binary(max_size=600))
    elif shape == "tls-random":
        sample = b"\x16\x03\x01" + data.draw(st.binary(max_size=600))
    elif shape == "cut":
        sample = hello[: data.draw(st.integers(0, len(hello)))]
    else:
        sample = bytearray(hello)
        for _ in range(data.draw(st.integers(1, 8))):
            sample[data.draw(st.integers(0, len(sample) - 1))] = data.draw(st.integers(0, 255))
        sample = bytes(sample)
    decided, name = read_server_name(sample)
    assert isinstance(decided, bool)
    assert name is None or (decided and name == name.lower() and 0 < len(name) <= 255)
