"""The pure engine: order independence, silent replay, partitions and memory.

The out-of-order property is checked against a reference written here from the rule's
definition (a plain pass over the readings in event-time order). Exact equality with
ordered input is promised whenever no reading arrives after a decision it would have
changed (no emitted decision is contradicted); where one is, the episode invariants hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from hypothesis import event, given, settings
from hypothesis import strategies as st

from processors.engine import Engine
from processors.rules import rules_from_settings
from vitals import contract
from vitals.contract import Detection, Reading, Upload
from vitals.settings import Settings

T0 = 1_800_000_000_000
STEP_MS = 5_000
FOR_MS, CLEAR_FOR_MS = 30_000, 20_000
THRESHOLD, CLEAR = 90.0, 92.0


def small_rules_engine() -> Engine:
    return Engine(
        rules_from_settings(
            Settings(
                spo2_low_for_s=FOR_MS / 1000,
                clear_for_s=CLEAR_FOR_MS / 1000,
                allowed_lateness_s=3600,
            )
        )
    )


def upload(
    points: list[tuple[int, float]],
    *,
    patient: str = "p-1",
    device: str = "d-1",
    metric: str = "spo2",
    received: int | None = None,
) -> Upload:
    readings = tuple(Reading(metric, t, v, "%") for t, v in points)
    arrived = received if received is not None else max(t for t, _ in points) + 1_000
    return Upload(f"u-{arrived}", "gw", device, patient, arrived, readings)


Fact = tuple[str, str, int, float]  # alert id, state, at, value


def facts(found: list[Detection]) -> list[Fact]:
    return [(d.alert_id, d.state, d.at, d.value or 0.0) for d in found]


def reference(points: list[tuple[int, float]], patient: str = "p-1") -> set[Fact]:
    """spo2_low from its definition, over the readings sorted by event time."""
    phase, start, worst, clear_since = "idle", 0, math.inf, None
    out: set[Fact] = set()
    for t, v in sorted(dict(points).items()):  # one device: a time is one reading
        if phase == "open":
            if v >= CLEAR:
                clear_since = t if clear_since is None else clear_since
                if t - clear_since >= CLEAR_FOR_MS:
                    out.add((contract.alert_id(patient, "spo2_low", start), "resolved", t, worst))
                    phase = "idle"
            else:
                clear_since = None
                worst = min(worst, v) if v < THRESHOLD else worst
            continue
        if v >= THRESHOLD:
            phase = "idle"
            continue
        if phase == "idle":
            phase, start, worst = "pending", t, v
        worst = min(worst, v)
        if t - start >= FOR_MS:
            out.add((contract.alert_id(patient, "spo2_low", start), "opened", t, worst))
            phase, clear_since = "open", None
    return out


def check_invariants(found: list[Detection]) -> None:
    """What holds for any arrival order."""
    seen: set[tuple[str, str]] = set()
    spans: dict[str, list[float]] = {}
    for d in found:
        assert (d.alert_id, d.state) not in seen, "a state emitted twice"
        seen.add((d.alert_id, d.state))
        assert d.alert_id == contract.alert_id(d.patient_id, d.rule, d.episode_start)
        if d.state == "opened":
            spans[d.alert_id] = [d.episode_start, math.inf]
        else:
            assert d.alert_id in spans, "resolved before opened"
            spans[d.alert_id][1] = d.at
    ordered = sorted(spans.values())
    for (_, end), (next_start, _) in zip(ordered, ordered[1:], strict=False):
        assert end <= next_start, "episodes overlap in event time"
    # Every generated stream ends with a long clear stretch: nothing stays open.
    assert all(end != math.inf for _, end in ordered), "an episode never resolved"


# --- generated streams --------------------------------------------------------------------

# Breaching values twice as likely, so that most streams hold an episode or more.
VALUES = st.sampled_from([84.0, 84.0, 86.0, 89.9, 89.9, 90.0, 91.0, 92.0, 96.0])


@st.composite
def streams(draw: st.DrawFn) -> list[list[tuple[int, float]]]:
    """One device's readings (every 5 s, in runs of equal values), cut into uploads."""
    segments = draw(st.lists(st.tuples(st.integers(1, 12), VALUES), min_size=1, max_size=8))
    values = [v for count, v in segments for _ in range(count)]
    values += [96.0] * (CLEAR_FOR_MS // STEP_MS + 1)  # ends clear
    points = [(T0 + i * STEP_MS, v) for i, v in enumerate(values)]
    cuts = draw(st.lists(st.integers(1, len(points) - 1), min_size=1, max_size=len(points) // 2))
    bounds = [0, *sorted(set(cuts)), len(points)]
    return [points[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@st.composite
def arrival_orders(draw: st.DrawFn, count: int) -> list[int]:
    """Any order of the uploads, some of them retried (arriving again, later)."""
    order = draw(st.permutations(range(count)))
    retries = draw(st.lists(st.integers(0, count - 1), max_size=3))
    for index in retries:
        order.insert(draw(st.integers(order.index(index) + 1, len(order))), index)
    return order


def feed_all(e: Engine, uploads: list[Upload], partition: str = "p0") -> list[Detection]:
    found: list[Detection] = []
    for u in uploads:
        found += e.feed(partition, u, now=u.received)
    return found


@settings(max_examples=300, deadline=None)
@given(chunks=streams(), data=st.data())
def test_out_of_order_arrival_gives_the_detections_of_ordered_input(
    chunks: list[list[tuple[int, float]]], data: st.DataObject
) -> None:
    uploads = [upload(c, received=T0 + 10_000_000) for c in chunks]  # all on time
    in_order = feed_all(small_rules_engine(), uploads)
    final = reference([p for c in chunks for p in c])
    check_invariants(in_order)
    assert set(facts(in_order)) == final and len(in_order) == len(final)

    order = data.draw(arrival_orders(len(chunks)))
    shuffled = feed_all(small_rules_engine(), [uploads[i] for i in order])
    check_invariants(shuffled)

    # Was any decision taken on the data known so far that all the data contradict?
    known: list[tuple[int, float]] = []
    contradicted = False
    for i in order:
        known += chunks[i]
        contradicted = contradicted or not reference(known) <= final
    event("contradicted by late data" if contradicted else "no decision contradicted")
    if not contradicted:
        assert sorted(facts(shuffled)) == sorted(facts(in_order))


@settings(max_examples=150, deadline=None)
@given(chunks=streams(), other=streams(), data=st.data())
def test_disorder_within_an_upload_and_across_patients_changes_nothing(
    chunks: list[list[tuple[int, float]]],
    other: list[list[tuple[int, float]]],
    data: st.DataObject,
) -> None:
    def build(patient: str, cs: list[list[tuple[int, float]]], shuffle: bool) -> list[Upload]:
        return [
            upload(data.draw(st.permutations(c)) if shuffle else c, patient=patient) for c in cs
        ]

    alone_a = feed_all(small_rules_engine(), build("p-a", chunks, shuffle=False))
    alone_b = feed_all(small_rules_engine(), build("p-b", other, shuffle=False))
    a, b = build("p-a", chunks, shuffle=True), build("p-b", other, shuffle=True)
    picks = data.draw(st.permutations([0] * len(a) + [1] * len(b)))
    queues = [iter(a), iter(b)]
    together = feed_all(small_rules_engine(), [next(queues[p]) for p in picks])
    assert [d for d in together if d.patient_id == "p-a"] == alone_a
    assert [d for d in together if d.patient_id == "p-b"] == alone_b


@settings(max_examples=150, deadline=None)
@given(chunks=streams(), data=st.data())
def test_silent_replay_then_live_equals_never_stopping(
    chunks: list[list[tuple[int, float]]], data: st.DataObject
) -> None:
    """The restart guarantee on the pure core, for any arrival order: an engine fed the
    records before the committed offset (outputs discarded) continues exactly like the
    engine that never stopped: no second opened, the same resolutions."""
    order = data.draw(st.permutations(range(len(chunks))))
    uploads = [upload(chunks[i], received=T0 + 10_000_000 + n) for n, i in enumerate(order)]
    committed = data.draw(st.integers(0, len(uploads)))
    never_stopped = small_rules_engine()
    feed_all(never_stopped, uploads[:committed])
    expected = feed_all(never_stopped, uploads[committed:])
    restarted = small_rules_engine()
    feed_all(restarted, uploads[:committed])  # silent: published before the restart
    assert feed_all(restarted, uploads[committed:]) == expected


# --- partitions, metrics without rules, memory -----------------------------------------------


def desaturation(start: int, patient: str = "p-1") -> Iterator[Upload]:
    for i in range(0, 9):
        yield upload([(start + i * STEP_MS, 85.0)], patient=patient)


def test_only_metrics_with_a_rule_are_held() -> None:
    e = small_rules_engine()
    e.feed("p0", upload([(T0, 1200.0)], metric="steps"), now=T0)
    assert e.windows_held() == 0
    e.feed("p0", upload([(T0, 36.6)], metric="body_temp"), now=T0)
    assert (e.windows_held(), e.readings_held()) == (1, 1)  # NEWS2's window only
    e.feed("p0", upload([(T0, 97.0)]), now=T0)
    e.feed("p0", upload([(T0, 70.0)], metric="heart_rate"), now=T0)
    # spo2 and heart_rate: their own windows, and NEWS2's
    assert (e.windows_held(), e.readings_held()) == (3, 5)


def test_state_is_per_partition_and_dropped_with_it() -> None:
    e = small_rules_engine()
    ups = list(desaturation(T0))
    feed_all(e, ups[:5], partition="p0")
    e.drop_partition("p0")
    assert e.windows_held() == 0
    # Without the first five readings the run starts later, so nothing opens yet.
    assert feed_all(e, ups[5:], partition="p0") == []
    assert list(e.partitions()) == ["p0"]


def test_idle_series_are_forgotten_but_not_while_an_episode_is_open() -> None:
    e = small_rules_engine()
    horizon = e.rules.horizon_ms
    e.feed("p0", upload([(T0, 97.0)], patient="quiet"), now=T0)
    opened = feed_all(e, list(desaturation(T0, patient="sick")))
    assert [d.state for d in opened] == ["opened"]
    assert e.forget_idle(now=T0 + horizon) == 0  # not yet a horizon without news
    # "quiet": its spo2 and NEWS2 windows; "sick": its NEWS2 window (one parameter, no score)
    assert e.forget_idle(now=T0 + 2 * horizon) == 3
    assert e.windows_held() == 1  # "sick" still has an open spo2_low episode


def test_readings_beyond_the_horizon_of_their_series_are_counted_not_held() -> None:
    e = small_rules_engine()
    newest = T0 + e.rules.horizon_ms + 60_000
    e.feed("p0", upload([(newest, 97.0)]), now=newest)
    e.feed("p0", upload([(T0, 85.0)], received=newest), now=newest)
    assert e.counts["beyond_horizon"] == 1 and e.counts["news2_beyond_horizon"] == 1
    assert e.readings_held() == 2  # the newest, in the spo2 and the NEWS2 window
