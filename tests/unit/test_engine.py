"""The pure engine: order independence, silent replay, partitions and memory.

The out-of-order property is checked against a reference written here from the rule's
definition (a plain pass over the readings in event-time order), and, with every detector
of one metric live (threshold, flat line, jumps, personal baseline, suppression of
repeats, tolerance of brief dips; short parameters so that short streams reach them),
against the engine fed the same readings at once. Exact equality with ordered input is
promised whenever no reading arrives after a decision it would have
changed (no emitted decision is contradicted); where one is, the episode invariants hold.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from processors.engine import Engine
from processors.rules import DEFAULT_RULES_FILE, parse_rules, rules_from_settings
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


def live_rules_engine() -> Engine:
    """Every detector of spo2 live within a few readings of 5 s."""
    doc = tomllib.loads(DEFAULT_RULES_FILE.read_text(encoding="utf-8"))
    short = {
        "spo2_low": {
            "for_s": FOR_MS / 1000,
            "clear_for_s": CLEAR_FOR_MS / 1000,
            "suppress_s": 60.0,
            "dip_s": 10.0,  # the shared machine's dip tolerance, under disorder too
        },
        "spo2_flat": {"for_s": 30.0, "min_readings": 4, "clear_for_s": 10.0},
        "spo2_jump": {"max_change": 10.0, "hold_s": 20.0, "for_s": 10.0, "clear_for_s": 10.0},
        "spo2_baseline": {
            "warmup_s": 30.0,
            "min_readings": 4,
            "baseline_tau_s": 300.0,
            "level_tau_s": 20.0,
            "min_sd": 1.0,
            "deviation_sd": 2.0,
            "clear_sd": 1.0,
            "for_s": 15.0,
            "clear_for_s": 20.0,
        },
    }
    for rule, fields in short.items():
        doc["defaults"][rule].update(fields)
    return Engine(parse_rules(doc, source="test", lateness_ms=3_600_000))


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


def flagged_facts(found: list[Detection]) -> list[tuple[str, str, int, float, bool]]:
    """Facts with the suppression decision: late data can contradict it too."""
    return [(*fact, d.suppressed) for fact, d in zip(facts(found), found, strict=True)]


def engine_reference(make: Callable[[], Engine]) -> Callable[[list[tuple[int, float]]], set[Any]]:
    """The engine's own detections for readings given at once, in event-time order."""

    def run(points: list[tuple[int, float]]) -> set[Any]:
        ordered = sorted(dict(points).items())
        return set(flagged_facts(make().feed("p0", upload(ordered, received=T0), now=T0)))

    return run


def check_invariants(found: list[Detection], *, all_resolved: bool = True) -> None:
    """What holds for any arrival order."""
    seen: set[tuple[str, str]] = set()
    spans: dict[str, dict[str, list[float]]] = {}  # per rule
    for d in found:
        assert (d.alert_id, d.state) not in seen, "a state emitted twice"
        seen.add((d.alert_id, d.state))
        assert d.alert_id == contract.alert_id(d.patient_id, d.rule, d.episode_start)
        rule = spans.setdefault(d.rule, {})
        if d.state == "opened":
            rule[d.alert_id] = [d.episode_start, math.inf]
        else:
            assert d.alert_id in rule, "resolved before opened"
            rule[d.alert_id][1] = d.at
    for rule in spans.values():
        ordered = sorted(rule.values())
        for (_, end), (next_start, _) in zip(ordered, ordered[1:], strict=False):
            assert end <= next_start, "episodes overlap in event time"
        # Every generated stream ends with a clear stretch: no threshold episode stays open.
        assert not all_resolved or all(end != math.inf for _, end in ordered), "never resolved"


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


@pytest.mark.parametrize("live", [False, True], ids=["spo2_low", "every-spo2-detector"])
@settings(max_examples=300, deadline=None)
@given(chunks=streams(), data=st.data())
def test_out_of_order_arrival_gives_the_detections_of_ordered_input(
    live: bool, chunks: list[list[tuple[int, float]]], data: st.DataObject
) -> None:
    make = live_rules_engine if live else small_rules_engine
    expected = engine_reference(make) if live else reference
    key: Callable[[list[Detection]], list[Any]] = flagged_facts if live else facts
    uploads = [upload(c, received=T0 + 10_000_000) for c in chunks]  # all on time
    in_order = feed_all(make(), uploads)
    final = expected([p for c in chunks for p in c])
    check_invariants(in_order, all_resolved=not live)
    assert set(key(in_order)) == final and len(in_order) == len(final)
    if live:
        event(f"rules seen: {sorted({d.rule for d in in_order})}")
        event(f"a repeat suppressed: {any(d.suppressed for d in in_order)}")

    order = data.draw(arrival_orders(len(chunks)))
    shuffled = feed_all(make(), [uploads[i] for i in order])
    check_invariants(shuffled, all_resolved=not live)

    # Was any decision taken on the data known so far that all the data contradict?
    known: list[tuple[int, float]] = []
    contradicted = False
    for i in order:
        known += chunks[i]
        contradicted = contradicted or not expected(known) <= final
    event("contradicted by late data" if contradicted else "no decision contradicted")
    if not contradicted:
        assert sorted(key(shuffled)) == sorted(key(in_order))


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


@pytest.mark.parametrize("live", [False, True], ids=["spo2_low", "every-spo2-detector"])
@settings(max_examples=150, deadline=None)
@given(chunks=streams(), data=st.data())
def test_silent_replay_then_live_equals_never_stopping(
    live: bool, chunks: list[list[tuple[int, float]]], data: st.DataObject
) -> None:
    """The restart guarantee on the pure core, for any arrival order: an engine fed the
    records before the committed offset (outputs discarded) continues exactly like the
    engine that never stopped: no second opened, the same resolutions."""
    order = data.draw(st.permutations(range(len(chunks))))
    uploads = [upload(chunks[i], received=T0 + 10_000_000 + n) for n, i in enumerate(order)]
    committed = data.draw(st.integers(0, len(uploads)))
    make = live_rules_engine if live else small_rules_engine
    never_stopped = make()
    feed_all(never_stopped, uploads[:committed])
    expected = feed_all(never_stopped, uploads[committed:])
    restarted = make()
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


@pytest.mark.parametrize("every", [2, 5])
@settings(max_examples=150, deadline=None)
@given(chunks=streams(), data=st.data())
def test_sparse_checkpoints_decide_exactly_as_one_after_every_reading(
    every: int, chunks: list[list[tuple[int, float]]], data: st.DataObject
) -> None:
    """The compact windows (a checkpoint every few readings, the readings between stepped
    again quietly before a late one) against a checkpoint after every reading, on every
    spo2 detector, for any arrival order with retries: the same detections, scores and
    counts, in the same order."""
    order = data.draw(arrival_orders(len(chunks)))
    uploads = [upload(chunks[i], received=T0 + 10_000_000) for i in order]
    reference, sparse = live_rules_engine(), live_rules_engine()
    reference.every, sparse.every = 1, every
    assert feed_all(sparse, uploads) == feed_all(reference, uploads)
    assert sparse.counts == reference.counts
