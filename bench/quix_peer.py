"""The processor's peer, run as its own process: Quix Streams computing a 60 s sliding-window
mean of heart rate per patient over vitals.readings (`python -m bench.quix_peer`).

Each upload message is expanded into its readings, timed by the reading's event time, as
the project's engine does. Default Quix settings (changelog topics on, at-least-once) apart
from a 0.5 s commit interval, so that the harness sees progress as it sees the project's.
Stops cleanly on SIGTERM (Quix handles it).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def argv(bootstrap: str, topic: str, group: str, state_dir: Path | str) -> list[str]:
    """The peer as a child process's `python -m` arguments (bench/procs.py)."""
    return [
        "bench.quix_peer",
        *("--bootstrap", bootstrap, "--topic", topic),
        *("--group", group, "--state-dir", str(state_dir)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.quix_peer")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args()

    from quixstreams import Application

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=0.5,
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(args.topic, value_deserializer="json", key_deserializer="str")
    sdf = app.dataframe(topic)

    def heart_rates(upload: dict[str, Any]) -> list[dict[str, Any]]:
        # Upload messages carry readings as [metric, t_ms, value, unit] (vitals.contract).
        return [{"t": r[1], "v": r[2]} for r in upload["readings"] if r[0] == "heart_rate"]

    sdf = sdf.apply(heart_rates, expand=True)
    sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: value["t"])
    sdf = sdf.apply(lambda reading: reading["v"])
    sdf = sdf.sliding_window(duration_ms=60_000).mean().final()
    app.run(sdf)


if __name__ == "__main__":
    main()
