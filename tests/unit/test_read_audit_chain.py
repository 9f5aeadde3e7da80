"""The read audit's hash chain and the token buckets' after-the-fact charge, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from frontdoor import chain
from frontdoor.ratelimit import TokenBuckets

AT = datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)


def chained(writer: str, n: int) -> list[dict[str, Any]]:
    rows, head = [], chain.GENESIS
    for seq in range(1, n + 1):
        values = (writer, seq, AT + timedelta(seconds=seq), "k1", "ward", "readings", "p-1",
                  "ok", 200, seq)  # fmt: skip
        digest = chain.link(head, values)
        rows.append({**dict(zip(chain.FIELDS, values, strict=True)), "prev_hash": head,
                     "hash": digest})  # fmt: skip
        head = digest
    return rows


def test_an_intact_chain_per_writer_verifies() -> None:
    assert chain.first_break(chained("a", 5) + chained("b", 3)) is None


def test_an_edited_a_missing_and_a_reordered_row_each_break_the_chain_where_they_are() -> None:
    edited = chained("a", 5)
    edited[2]["row_count"] = 0
    assert chain.first_break(edited) == chain.Break(
        "a", 3, "the row does not match its hash (edited)"
    )
    missing = chained("a", 5)
    del missing[1]
    assert chain.first_break(missing) == chain.Break("a", 2, "row 2 missing (next is 3)")
    swapped = chained("a", 3)
    swapped[1]["seq"], swapped[2]["seq"] = 3, 2
    assert chain.first_break(sorted(swapped, key=lambda r: r["seq"])) is not None
    relinked = chained("a", 3)  # a row rehashed alone: the next row's link shows it
    relinked[0]["row_count"] = 7
    values = [relinked[0][f] for f in chain.FIELDS]
    relinked[0]["hash"] = chain.link(chain.GENESIS, values)
    assert chain.first_break(relinked) == chain.Break(
        "a", 2, "prev_hash is not the previous row's hash"
    )


def test_times_are_chained_to_the_microsecond() -> None:
    one = chained("a", 1)[0]
    later = {**one, "at": one["at"] + timedelta(microseconds=1)}
    assert chain.first_break([later]) is not None


def test_a_charge_overdraws_and_the_bucket_waits_until_it_is_repaid() -> None:
    now = [0.0]
    rows = TokenBuckets(1.0, 60, clock=lambda: now[0])  # 60 rows a minute
    assert rows.take("r", cost=0.0) == 0.0
    rows.charge("r", 100)  # one read of 100 rows: 40 owed
    assert rows.take("r", cost=0.0) == 40.0
    now[0] = 40.0
    assert rows.take("r", cost=0.0) == 0.0
    assert rows.take("other", cost=0.0) == 0.0  # per key
