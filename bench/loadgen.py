"""A lean HTTP/1.1 load generator, run as its own process (`python -m bench.loadgen`).

Raw asyncio protocols on uvloop, keep-alive connections and requests built in full before
the clock starts, so the per-request cost is a socket write and a header scan. Closed loop
(`--rate 0`: each connection sends its next request when the answer arrives, fixed
concurrency) or open loop (`--rate R` requests/s on a schedule; latency counts from the
scheduled time, so a slow server cannot hide queueing: no coordinated omission).

Prints one JSON object: counts, statuses, p50/p99 latency in ms, and its own CPU seconds,
which is how we show it was not the bottleneck (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from array import array
from collections import Counter, deque
from pathlib import Path

import orjson

from bench.stats import percentile


def build_requests(host: str, path: str, headers: list[str], bodies: list[bytes]) -> list[bytes]:
    head = "".join(f"{h}\r\n" for h in headers)
    return [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body in bodies
    ]


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, started: float) -> None:
        self.started = started
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            at = head.find(b"content-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at)
                length = int(head[at + 15 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buf) < total:
                return
            status = int(head[9:12])
            del self.buf[:total]
            self.gen.answered(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost(self)


class Generator:
    def __init__(self, requests: list[bytes], rate: float, warmup_s: float, duration_s: float):
        self.requests = requests
        self.rate = rate
        self.next_request = 0
        self.idle: deque[Connection] = deque()
        self.backlog: deque[float] = deque()  # scheduled start times waiting for a connection
        self.latencies = array("d")
        self.statuses: Counter[int] = Counter()
        self.sent = 0
        self.lost_connections = 0
        self.measure_from = time.perf_counter() + warmup_s
        self.stop_at = self.measure_from + duration_s
        self.stopping = False

    def _request(self) -> bytes:
        request = self.requests[self.next_request]
        self.next_request = (self.next_request + 1) % len(self.requests)
        return request

    def dispatch(self, conn: Connection, started: float) -> None:
        self.sent += 1
        conn.send(self._request(), started)

    def answered(self, conn: Connection, status: int) -> None:
        now = time.perf_counter()
        if conn.started >= self.measure_from and now <= self.stop_at:
            self.latencies.append((now - conn.started) * 1000)
            self.statuses[status] += 1
        if self.stopping:
            return
        if self.rate == 0:
            self.dispatch(conn, now)
        elif self.backlog:
            self.dispatch(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)

    def lost(self, conn: Connection) -> None:
        self.lost_connections += 1

    async def schedule(self) -> None:
        """Open loop: release requests at their scheduled times."""
        interval = 1 / self.rate
        due = time.perf_counter()
        while not self.stopping:
            now = time.perf_counter()
            while due <= now:
                if self.idle:
                    self.dispatch(self.idle.popleft(), due)
                else:
                    self.backlog.append(due)
                due += interval
            await asyncio.sleep(min(0.001, max(0.0, due - now)))


async def run(args: argparse.Namespace, bodies: list[bytes]) -> dict[str, object]:
    targets = [t.rsplit(":", 1) for t in args.targets.split(",")]
    # The Host header does not matter to the servers measured: one request list for all.
    host0 = f"{targets[0][0]}:{targets[0][1]}"
    requests = build_requests(host0, args.path, args.header, bodies)
    gen = Generator(requests, args.rate, args.warmup, args.duration)
    loop = asyncio.get_running_loop()
    conns: list[Connection] = []
    for i in range(args.connections):
        host, port = targets[i % len(targets)]
        _, conn = await loop.create_connection(lambda: Connection(gen), host, int(port))
        conns.append(conn)
    cpu0 = _cpu()
    gen.measure_from = time.perf_counter() + args.warmup
    gen.stop_at = gen.measure_from + args.duration
    scheduler = None
    if args.rate == 0:
        for conn in conns:
            gen.dispatch(conn, time.perf_counter())
    else:
        gen.idle.extend(conns)
        scheduler = asyncio.create_task(gen.schedule())
    await asyncio.sleep(gen.stop_at - time.perf_counter())
    gen.stopping = True
    cpu = _cpu() - cpu0
    if scheduler:
        await scheduler
    for conn in conns:
        if conn.transport:
            conn.transport.close()
    lat = list(gen.latencies)
    answered = sum(gen.statuses.values())
    return {
        "answered": answered,
        "per_s": answered / args.duration,
        "statuses": {str(k): v for k, v in gen.statuses.items()},
        "p50_ms": percentile(lat, 50) if lat else None,
        "p99_ms": percentile(lat, 99) if lat else None,
        "backlog_at_end": len(gen.backlog),
        "lost_connections": gen.lost_connections,
        "cpu_s": cpu,
        "cpu_share": cpu / (args.duration + args.warmup),
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.loadgen")
    parser.add_argument("--targets", required=True, help="host:port[,host:port...]")
    parser.add_argument("--path", default="/v1/readings")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--bodies", required=True, help="JSON array of body strings")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s; 0 = closed loop")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        pass
    bodies = [b.encode() for b in orjson.loads(Path(args.bodies).read_bytes())]
    result = asyncio.run(run(args, bodies))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
