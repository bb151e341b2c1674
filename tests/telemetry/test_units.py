"""The pure parts: trace header parsing and injection, service names, snapshot sums, sampling."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from proxy.telemetry import metrics as M
from proxy.telemetry import tracecontext as tc
from proxy.telemetry.accesslog import UtcClock
from proxy.telemetry.exposition import render
from proxy.telemetry.identity import Identity
from proxy.telemetry.tracing import Sampler

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def test_traceparent_valid_and_invalid() -> None:
    parent = tc.parse_traceparent(f"00-{TRACE}-{SPAN}-01".encode())
    assert parent is not None
    assert (parent.trace_id, parent.span_id, parent.sampled, parent.style) == (TRACE, SPAN, True, tc.STYLE_W3C)
    unsampled = tc.parse_traceparent(f"00-{TRACE}-{SPAN}-00".encode())
    assert unsampled is not None and unsampled.sampled is False
    future = tc.parse_traceparent(f"01-{TRACE}-{SPAN}-01-extra".encode())
    assert future is not None and future.trace_id == TRACE
    for bad in (
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero span id
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper case is not allowed
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE[:-1]}-{SPAN}-01",
        "garbage",
    ):
        assert tc.parse_traceparent(bad.encode()) is None, bad


def test_b3_forms() -> None:
    multi = tc.parse_b3({tc.B3_TRACE_ID: TRACE.encode(), tc.B3_SPAN_ID: SPAN.encode(), tc.B3_SAMPLED: b"1"})
    assert multi is not None and (multi.trace_id, multi.span_id, multi.sampled) == (TRACE, SPAN, True)
    short = tc.parse_b3({tc.B3: f"{TRACE[16:]}-{SPAN}-0".encode()})
    assert short is not None and short.trace_id == "0" * 16 + TRACE[16:] and short.sampled is False
    debug = tc.parse_b3({tc.B3_TRACE_ID: TRACE.encode(), tc.B3_SPAN_ID: SPAN.encode(), tc.B3_FLAGS: b"1"})
    assert debug is not None and debug.sampled is True
    deny = tc.parse_b3({tc.B3: b"0"})
    assert deny is not None and deny.trace_id == "" and deny.sampled is False
    deferred = tc.parse_b3({tc.B3: f"{TRACE}-{SPAN}".encode()})
    assert deferred is not None and deferred.sampled is None
    assert tc.parse_b3({tc.B3_TRACE_ID: b"xyz", tc.B3_SPAN_ID: SPAN.encode()}) is None


def test_w3c_wins_over_b3_and_b3_dialect_is_kept() -> None:
    headers = {
        tc.TRACEPARENT: f"00-{TRACE}-{SPAN}-01".encode(),
        tc.B3_TRACE_ID: b"1" * 32,
        tc.B3_SPAN_ID: b"2" * 16,
    }
    parent = tc.extract(headers)
    assert parent is not None and parent.trace_id == TRACE
    assert tc.b3_style(headers) == tc.STYLE_B3_MULTI
    out = dict(tc.inject(TRACE, "a" * 16, SPAN, True, tc.STYLE_B3_MULTI, None))
    assert out[tc.TRACEPARENT] == f"00-{TRACE}-{'a' * 16}-01".encode()
    assert out[tc.B3_PARENT_SPAN_ID] == SPAN.encode() and out[tc.B3_SAMPLED] == b"1"
    single = dict(tc.inject(TRACE, "a" * 16, "", False, tc.STYLE_B3_SINGLE, b"k=v"))
    assert single[tc.B3] == f"{TRACE}-{'a' * 16}-0".encode() and single[tc.TRACESTATE] == b"k=v"


@given(st.binary(max_size=80))
def test_parsers_never_raise(value: bytes) -> None:
    tc.parse_traceparent(value)
    tc.parse_b3({tc.B3: value})
    tc.parse_b3({tc.B3_TRACE_ID: value, tc.B3_SPAN_ID: value, tc.B3_SAMPLED: value})


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("reviews.shop.svc.cluster.local", ("reviews.shop.svc.cluster.local", "reviews", "shop")),
        ("reviews.shop", ("reviews.shop", "reviews", "shop")),
        ("reviews", ("reviews", "reviews", "mine")),
        ("10.1.2.3", ("10.1.2.3", "10.1.2.3", "unknown")),
        ("api.example.com", ("api.example.com", "api.example.com", "unknown")),
        ("", ("unknown", "unknown", "unknown")),
    ],
)
def test_service_parts(host: str, expected: tuple[str, str, str]) -> None:
    assert M.service_parts(host, "mine") == expected


def test_split_host() -> None:
    assert M.split_host("Reviews.Shop:9080") == "reviews.shop"
    assert M.split_host("[::1]:80") == "::1"
    assert M.split_host("::1") == "::1"


def test_identity_defaults() -> None:
    identity = Identity.from_env({"POD_NAME": "web-7c9d", "PILOTFISH_APP": ""})
    assert identity.workload == "web-7c9d"  # the pod name when no owner is known
    assert identity.app == "unknown" and identity.namespace == "unknown"
    assert identity.canonical_service == "web-7c9d" and identity.canonical_revision == "latest"


def _snapshot(count: int, trace: str, when: float) -> M.Snapshot:
    snapshot = M.Snapshot()
    snapshot.workers = 1
    labels = tuple(f"v{i}" for i in range(len(M.HTTP_LABELS)))
    values = M.empty_http()
    values[M.COUNT] = count
    values[M.DURATION_SUM] = 2.5 * count
    values[M.DURATION_BUCKETS + 2] = count
    values[M.REQUEST_BYTES_BUCKETS] = count
    values[M.RESPONSE_BYTES_BUCKETS + 5] = count
    snapshot.http[labels] = values
    snapshot.exemplars[(labels, 2)] = (trace, SPAN, 2.5, when)
    snapshot.counters = {"pilotfish_tracing_spans_dropped": 1}
    snapshot.process = {"cpu_seconds_total": 1.5, "start_time_seconds": when}
    return snapshot


def test_snapshots_add_up_through_json_and_render() -> None:
    total = M.Snapshot()
    total.add(M.Snapshot.from_json(_snapshot(3, "a" * 32, 100.0).to_json()))
    total.add(M.Snapshot.from_json(_snapshot(4, "b" * 32, 200.0).to_json()))
    ((values),) = total.http.values()
    assert values[M.COUNT] == 7 and values[M.DURATION_BUCKETS + 2] == 7
    assert total.counters["pilotfish_tracing_spans_dropped"] == 2 and total.workers == 2
    assert total.process == {"cpu_seconds_total": 3.0, "start_time_seconds": 100.0}
    ((exemplar),) = total.exemplars.values()
    assert exemplar[0] == "b" * 32  # the newest wins
    body, content_type = render(total, {"downstream_rq_total": ("counter", "Requests", 7)}, openmetrics=True)
    assert content_type.startswith(b"application/openmetrics-text")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}  # type: ignore[no-untyped-call]
    buckets = [s for s in families["istio_request_duration_milliseconds"].samples if s.name.endswith("_bucket")]
    assert [s.value for s in buckets][:4] == [0, 0, 7, 7] and buckets[-1].labels["le"] == "+Inf"
    assert buckets[2].exemplar is not None and buckets[2].exemplar.labels["trace_id"] == "b" * 32
    assert families["pilotfish_downstream_rq"].samples[0].value == 7
    text, _ = render(total, {}, openmetrics=False)
    assert b"istio_requests_total{" in text and b"# {" not in text


def test_sampler_from_env() -> None:
    default = Sampler.from_env({})
    assert default.parent_based and default.ratio == 0.01
    assert default.decide(True) and not default.decide(False)
    always = Sampler.from_env({"OTEL_TRACES_SAMPLER": "always_on"})
    assert always.decide(False) and always.root()
    assert not Sampler.from_env({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}).root()
    ratio = Sampler.from_env({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"})
    assert 4000 < sum(ratio.root() for _ in range(10_000)) < 6000


def test_clock() -> None:
    clock = UtcClock()
    assert clock.format(0.25) == "1970-01-01T00:00:00.250Z"
    assert clock.format(86400.75) == "1970-01-02T00:00:00.750Z"


def test_custom_histogram_buckets() -> None:
    assert M.parse_buckets('{"istiocustom": [10, 1, 5, 5]}') == (1.0, 5.0, 10.0)
    for unusable in (None, "", "nope", "[1, 2]", '{"other": [1]}', '{"istiocustom": []}',
                     '{"istiocustom": [-1, 2]}', '{"istiocustom": ["x"]}'):  # fmt: skip
        assert M.parse_buckets(unusable) is None, unusable
    layout = M.Layout((1.0, 5.0, 10.0))
    snapshot = M.Snapshot()
    snapshot.buckets = layout.buckets
    values = layout.empty()
    values[M.COUNT] = 2
    values[layout.duration + 1] = 1  # one in (1, 5]
    values[layout.duration + 3] = 1  # one above 10
    snapshot.http[tuple("x" for _ in M.HTTP_LABELS)] = values
    back = M.Snapshot.from_json(snapshot.to_json())
    assert back.buckets == (1.0, 5.0, 10.0)
    text, _ = render(back, {}, openmetrics=False)
    duration = [
        line for line in text.decode().splitlines()
        if line.startswith("istio_request_duration_milliseconds_bucket")
    ]  # fmt: skip
    assert [line.split('le="')[1].split('"')[0] for line in duration] == ["1.0", "5.0", "10.0", "+Inf"]
    assert [float(line.rsplit(" ", 1)[1]) for line in duration] == [0, 1, 1, 2]


@given(
    st.lists(st.floats(min_value=0, max_value=1e9), max_size=30).map(sorted),
    st.floats(min_value=-1, max_value=2e9) | st.integers(min_value=0, max_value=10**9),
)
def test_histogram_slot_is_bisect_left(bounds: list[float], value: float) -> None:
    from bisect import bisect_left

    from proxy.telemetry.pipeline import histogram_slot

    assert histogram_slot(tuple(bounds), value) == bisect_left(bounds, value)
    for bound in bounds:  # on a boundary: the bucket whose upper bound it is (le)
        assert histogram_slot(tuple(bounds), bound) == bisect_left(bounds, bound)
