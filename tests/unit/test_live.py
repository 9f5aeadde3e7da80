"""The live feed's pure parts (readapi/live.py): which messages become board events, and
a stream's bounded queue dropping the client that fell behind without blocking."""

from __future__ import annotations

import orjson

from readapi.live import Event, Feed, decode
from vitals import contract
from vitals.settings import Settings


def _detection(retrospective: bool = False) -> contract.Detection:
    return contract.Detection(
        alert_id=contract.alert_id("p-1", "spo2_low", 1000), patient_id="p-1", rule="spo2_low",
        state="opened", severity="high", episode_start=1000, at=1000, detected=1001,
        retrospective=retrospective, metric="spo2", value=86.0,
    )  # fmt: skip


def test_public_alerts_of_both_versions_are_events_and_retrospective_ones_are_not() -> None:
    v1 = orjson.dumps(contract.alert_document(_detection(), 1002))
    change = contract.LifecycleChange("acknowledged", 0, 2000, "nurse")
    v2 = orjson.dumps(contract.lifecycle_document(_detection(), change, 2001))
    late = orjson.dumps(contract.alert_document(_detection(retrospective=True), 1002))
    first, second = decode("alert", v1), decode("alert", v2)
    assert first is not None and (first.kind, first.patient_id) == ("alert", "p-1")
    assert second is not None and second.data["state"] == "acknowledged"
    assert decode("alert", late) is None


def test_messages_the_board_cannot_use_are_skipped() -> None:
    other_schema = orjson.dumps({"schema": "vitals.alert/9", "patient_id": "p-1"})
    for raw in (b"", b"not json", b"[1]", other_schema, orjson.dumps({"schema": "vitals.alert/1"})):
        assert decode("alert", raw) is None
    assert decode("news2", b'{"patient_id": "p-1"}') is None


def test_news2_scores_become_the_boards_score() -> None:
    score = contract.News2Score(
        patient_id="p-1", t=5000, news2=7, band="high", red=False, partial=True, scale=1,
        parameters={"spo2": contract.ScoredParameter(3, 86.0, 0)}, computed=5001,
    )  # fmt: skip
    event = decode("news2", contract.encode_news2_score(score))
    assert event is not None and event.data["score"] == 7 and event.data["band"] == "high"


async def test_a_full_queue_closes_its_stream_and_spares_the_others() -> None:
    feed = Feed(Settings(api_live_queue_max=2))
    slow, fast = feed.subscribe(), feed.subscribe()
    event = Event("alert", "p-1", {})
    for _ in range(3):
        feed.publish(event)
        await fast.queue.get()  # the fast one keeps up
    assert slow.closed == "slow_client" and fast.closed is None
    assert slow.queue.get_nowait() == "slow_client" and slow.queue.empty()
    assert feed.subscribers == {fast}
    feed.close_all("server_stopping")
    assert fast.queue.get_nowait() == "server_stopping"
