"""The processor's state per patient (issue 19): memory at the realistic rate, by detector,
and hashes of what the engine decides, to prove a change of state layout changes nothing.

The population is `vitals burden`'s (evaluation/population.py): heart rate and SpO2
every 5 s, respiration every 30 s, temperature every 10 min, blood pressure three times
a day, 5-minute RR-interval tachograms every 30-60 min (about 0.55 readings a second),
uploads every 60 s, outages that hold uploads back, events in a share of patients.
`--hours` of it (at least the 2 h 15 min replay horizon, so windows are full) go through
one Engine, as one processor would hold them.

- memory: tracemalloc's growth over building the state, per patient; and each series'
  own objects (reachable from it, not from the rules) summed by detector;
- hashes (`--hashes`): SHA-256 of every detection, score record and count, for the uploads
  in arrival order, shuffled within 10 minutes of arrival (late within the lateness), and
  with one upload in eight held back 50 minutes. Only the engine's public calls are used,
  so the same file run against an older checkout gives that checkout's hashes.

`python -m bench.state [--patients 200] [--hours 3] [--hashes] [--out bench/results]`
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import random
import sys
import time
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from evaluation import population
from processors.engine import Engine
from processors.rules import rules_from_settings
from vitals.contract import Upload
from vitals.settings import Settings

PARTITIONS = 6


def fleet(opts: population.Options) -> list[Upload]:
    """Every patient's uploads, merged in arrival order."""
    found: list[Upload] = []
    for index in range(opts.patients):
        day = population.plan_day(index, opts)
        found += population.uploads(day, population.readings(day, opts), opts)
    found.sort(key=lambda u: u.received)
    return found


def feed(engine: Engine, uploads: Iterable[Upload], *, keep: bool = False) -> list[Any]:
    out: list[Any] = []
    for u in uploads:
        scores: list[Any] = []
        partition = zlib.crc32(u.patient_id.encode()) % PARTITIONS
        found = engine.feed(partition, u, now=u.received, scores=scores)
        if keep:
            out += found + scores
    return out


def _deep_size(root: object, seen: set[int]) -> int:
    """Bytes of the objects reachable from `root` not seen before (shared ones once)."""
    size, stack = 0, [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        size += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return size


def by_detector(engine: Engine) -> Counter[str]:
    """Each series' own bytes (window columns, checkpoints, episode and score logs),
    summed by its kind; what the rules hold is shared by every patient and left out."""
    seen: set[int] = set()
    _deep_size(engine.rules, seen)
    sizes: Counter[str] = Counter()
    for state in engine._partitions.values():  # noqa: SLF001 - a measurement
        sizes["device silence"] += _deep_size(state.silence, seen)
        for (_, kind), series in state.series.items():
            sizes[kind] += _deep_size(series, seen)
    return sizes


def memory(opts: population.Options) -> dict[str, Any]:
    uploads = fleet(opts)
    rules = rules_from_settings(Settings())
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = Engine(rules)
    started = time.perf_counter()
    feed(engine, uploads)
    seconds = time.perf_counter() - started
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    readings = sum(len(u.readings) for u in uploads)
    sizes = by_detector(engine)
    return {
        "patients": opts.patients,
        "hours": opts.hours,
        "readings": readings,
        "readings_per_patient_per_s": round(readings / opts.patients / (opts.hours * 3600), 3),
        "bytes_per_patient": round(held / opts.patients),
        "samples_held_per_patient": round(engine.readings_held() / opts.patients),
        "by_detector_bytes_per_patient": {
            k: round(v / opts.patients) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])
        },
        "feed_s_traced": round(seconds, 2),
    }


def _digest(items: Iterable[Any], counts: Counter[str]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(repr(item).encode())
    h.update(orjson.dumps(dict(sorted(counts.items()))))
    return h.hexdigest()[:16]


def variants(uploads: list[Upload], seed: int) -> dict[str, list[Upload]]:
    rng = random.Random(seed)
    shuffled = sorted(uploads, key=lambda u: u.received + rng.randrange(600_000))
    held = sorted(uploads, key=lambda u: u.received + (3_000_000 if rng.randrange(8) == 0 else 0))
    return {"in order": uploads, "shuffled within 10 min": shuffled, "1 in 8 held 50 min": held}


def hashes(opts: population.Options) -> dict[str, str]:
    uploads = fleet(opts)
    rules = rules_from_settings(Settings())
    found = {}
    for name, arrival in variants(uploads, opts.seed).items():
        engine = Engine(rules)
        found[name] = _digest(feed(engine, arrival, keep=True), engine.counts)
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--hashes", action="store_true", help="only the equivalence hashes")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    opts = population.Options(patients=args.patients, hours=args.hours, seed=args.seed)
    if args.hashes:
        print(orjson.dumps(hashes(opts), option=orjson.OPT_INDENT_2).decode())
        return
    result = memory(opts)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    lines = [
        f"# Processor state per patient ({stamp})",
        "",
        f"{result['patients']} patients, {result['hours']:g} h of `vitals burden`'s population "
        f"({result['readings_per_patient_per_s']} readings per patient per second), one "
        f"engine; tracemalloc growth: **{result['bytes_per_patient'] / 1024:.1f} KB per "
        f"patient** ({result['samples_held_per_patient']} readings held per patient).",
        "",
        "| detector (series) | KB per patient |",
        "|---|---|",
        *(f"| {k} | {v / 1024:.1f} |" for k, v in result["by_detector_bytes_per_patient"].items()),
    ]
    for path in (args.out / f"state-{stamp}.md", args.out / "latest-state.md"):
        path.write_text("\n".join(lines) + "\n")
    for path in (args.out / f"state-{stamp}.json", args.out / "latest-state.json"):
        path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"written: {args.out / f'state-{stamp}.md'}")


if __name__ == "__main__":
    main()
