"""Bounded load test of the inference server, ending with a SIGTERM under load.

Run: python bench/bench_load.py [--seconds 60] [--concurrency 16] [--quick] [--model-dir DIR]
     [--json]

The server runs as its own process (as in production) and this process is the load: one thread
per concurrent client, each with a keep-alive connection sending single-session requests back to
back for --seconds. Then, with the clients still sending, the server gets SIGTERM (what SageMaker
sends before SIGKILL 30 s later): every request it had started must still get its 200, new ones are
refused, and it must exit within 30 s. A request the server closed a reused connection on without
answering (it closes idle keep-alive connections when it stops, before reading what arrives next) is
retried once on a new connection, as HTTP clients do. After SIGTERM a connection closed or refused
without an answer counts as refused, not failed: the server closes connections unanswered only when
it never read the request, and its log says "drained" only if every request it read was answered.
Exit status 1 if a request failed, the exit was late, or the server did not drain.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench_serving import export_default_model, free_port, percentile, wait_ready

from {{ cookiecutter.project }}.serving import server as serving

EXIT_LIMIT_S = 30.0  # SageMaker's SIGKILL comes 30 s after SIGTERM


@dataclass
class ClientTally:
    """What one client thread saw."""

    latencies_ms: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # a request started but not answered 200
    refused: int = 0  # not sent: the server had stopped listening


class Client:
    """One keep-alive connection sending requests until `should_stop()` or the server is gone."""

    def __init__(
        self, port: int, bodies: list[str], k: int, stopping: threading.Event | None = None
    ) -> None:
        self.port, self.bodies, self.k = port, bodies, k
        self.stopping = stopping or threading.Event()  # set when the server was sent SIGTERM
        self.tally = ClientTally()
        self._conn: http.client.HTTPConnection | None = None
        self._reused = False  # the connection has answered before (so the server may close it)

    def run(self, should_stop: Callable[[], bool]) -> None:
        i = 0
        while not should_stop():
            i += 1
            if not self._one(self.bodies[i % len(self.bodies)]):
                return

    def _one(self, body: str) -> bool:
        """Send one request; False once the server no longer accepts connections."""
        for attempt in (1, 2):
            if self._conn is None:
                self._conn, self._reused = http.client.HTTPConnection("127.0.0.1", self.port), False
            begin = time.perf_counter()
            try:
                self._conn.request(
                    "POST", "/invocations", body, {"Content-Type": "application/json"}
                )
                response = self._conn.getresponse()
                payload = response.read()
            except ConnectionRefusedError:
                self.tally.refused += 1
                return False
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._close()
                if self._reused and attempt == 1:
                    continue  # dropped as idle before the server read it: retry once
                if self.stopping.is_set():
                    self.tally.refused += 1  # the server no longer reads requests
                    return False
                self.tally.failed.append(f"no answer: {exc!r}")
                return True
            except (OSError, http.client.HTTPException) as exc:
                self._close()
                self.tally.failed.append(f"broken answer: {exc!r}")
                return True
            self.tally.latencies_ms.append((time.perf_counter() - begin) * 1000)
            self._reused = True
            if response.status != 200 or not _has_k_answers(payload, self.k):
                self.tally.failed.append(f"{response.status}: {payload[:200]!r}")
            if response.getheader("Connection") == "close":
                self._close()
            return True
        return True

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


def _has_k_answers(payload: bytes, k: int) -> bool:
    try:
        return len(json.loads(payload)["recommendations"][0]) == k
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def request_bodies(n_skus: int, k: int, seed: int, n: int = 200) -> list[str]:
    """Single-session requests of 1-10 SKUs from the model's catalogue."""
    rng = random.Random(seed)
    sessions = (
        [f"sku-{rng.randrange(n_skus)}" for _ in range(rng.randint(1, 10))] for _ in range(n)
    )
    return [json.dumps({"sessions": [session], "k": k}) for session in sessions]


def run_load(
    server: subprocess.Popen, port: int, seconds: float, concurrency: int, n_skus: int, k: int
) -> dict:
    """`concurrency` clients for `seconds`, then SIGTERM to `server` while they keep sending."""
    stopping = threading.Event()
    clients = [
        Client(port, request_bodies(n_skus, k, seed), k, stopping) for seed in range(concurrency)
    ]
    threads = [
        threading.Thread(target=client.run, args=(lambda: False,), daemon=True)
        for client in clients
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    load_seconds = time.perf_counter() - started
    under_load = sum(len(c.tally.latencies_ms) for c in clients)
    sigterm_at = time.perf_counter()
    stopping.set()
    server.send_signal(signal.SIGTERM)
    try:
        returncode = server.wait(EXIT_LIMIT_S + 5)
    except subprocess.TimeoutExpired:
        returncode = None
    exit_seconds = time.perf_counter() - sigterm_at
    for thread in threads:
        thread.join(10)
    latencies = [ms for c in clients for ms in c.tally.latencies_ms]
    failed = [reason for c in clients for reason in c.tally.failed]
    return {
        "concurrency": concurrency,
        "seconds": round(load_seconds, 1),
        "requests": len(latencies),
        "failed": len(failed),
        "failures": failed[:5],
        "error_rate": len(failed) / max(1, len(latencies) + len(failed)),
        "req_per_s": round(under_load / load_seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
        "answered_after_sigterm": len(latencies) - under_load,
        "refused_after_sigterm": sum(c.tally.refused for c in clients),
        "exit_seconds": round(exit_seconds, 2),
        "exit_code": returncode,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration (default 60)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    parser.add_argument("--quick", action="store_true", help="a 10 s run")
    parser.add_argument("--model-dir", type=Path, help="an exported model (default: train one)")
    parser.add_argument("--skus", type=int, default=2_000, help="catalogue of the trained model")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = parser.parse_args(argv)
    seconds = 10.0 if args.quick else args.seconds

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or export_default_model(Path(tmp), args.skus)
        if args.model_dir:  # the catalogue of a given model: its SKUs may not be sku-<i>
            args.skus = json.loads((model_dir / "metadata.json").read_text())["vocabulary_size"]
        port = free_port()
        log_path = Path(tmp) / "server.log"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        with open(log_path, "wb") as log:
            command = serving.command(model_dir, "127.0.0.1", port)
            server = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        try:
            wait_ready(port, server)
            warm = Client(port, request_bodies(args.skus, args.k, seed=-1), args.k)
            warm_until = time.monotonic() + 2
            warm.run(lambda: time.monotonic() > warm_until)
            result = run_load(server, port, seconds, args.concurrency, args.skus, args.k)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        result["drained"] = "stopped (drained)" in log_path.read_text()

    ok = not result["failed"] and result["exit_code"] == 0 and result["drained"]
    ok = ok and result["exit_seconds"] < EXIT_LIMIT_S
    if args.json:
        print(json.dumps(result))
    else:
        source = args.model_dir or f"trained here ({args.skus} SKUs)"
        print(
            f"model: {source}; cpus: {os.cpu_count()}; load from one process, one thread a client"
        )
        columns = [
            "clients",
            "seconds",
            "requests",
            "failed",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
        ]
        keys = ["concurrency", "seconds", "requests", "failed", "req_per_s", "p50_ms", "p99_ms"]
        print(" ".join(f"{name:>8}" for name in columns))
        print(" ".join(f"{result[key]:>8}" for key in [*keys, "max_ms"]))
        print(
            f"SIGTERM under load: exit {result['exit_code']} after {result['exit_seconds']} s "
            f"(limit {EXIT_LIMIT_S:.0f} s); {result['answered_after_sigterm']} answered after it, "
            f"{result['refused_after_sigterm']} refused; drained: {result['drained']}"
        )
        for failure in result["failures"]:
            print(f"failed: {failure}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
