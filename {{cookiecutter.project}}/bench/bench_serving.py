"""Latency and throughput of the inference server over HTTP keep-alive on 127.0.0.1.

Run: python bench/bench_serving.py [--model-dir DIR] [--requests 2000] [--clients 2]

Without --model-dir it trains (1 epoch) and exports a model with the default parameters
(2,000 SKUs) into a temporary folder. The server runs as its own process, as in
production; the clients are separate processes, each with one keep-alive connection sending
single-session requests back to back. Targets on 2 cores: p50 < 5 ms, p99 < 20 ms. The clients
share the machine with the server: on 2 cores, more than 2 clients mostly measure that contention.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from {{ cookiecutter.project }}.serving import server as serving

TARGET_P50_MS, TARGET_P99_MS = 5.0, 20.0


def export_default_model(out_dir: Path, n_skus: int, n_sessions: int = 5_000) -> Path:
    """Train one epoch on random sessions over `n_skus` SKUs; the export is what matters here."""
    import pandas as pd

    from {{ cookiecutter.project }}.modeling.export import export_model
    from {{ cookiecutter.project }}.modeling.lstm import train
    from {{ cookiecutter.project }}.modeling.params import TrainParams

    rng = random.Random(0)
    sessions = [
        [f"sku-{rng.randrange(n_skus)}" for _ in range(rng.randint(2, 8))]
        for _ in range(n_sessions)
    ]
    frame = pd.DataFrame(
        {
            "skus": sessions,
            "first_event_at": pd.date_range("2026-01-01", periods=n_sessions, freq="s"),
        }
    )
    trained = train(frame, TrainParams(epochs=1), progress=lambda epoch, logs: None)
    return export_model(trained, out_dir / "export")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(port: int, server: subprocess.Popen, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/ping")
            response = conn.getresponse()
            if response.status == 200:
                return
            body = json.loads(response.read())
            if body.get("state") == "failed":
                raise SystemExit(f"the server cannot load the model: {body['error']}")
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise SystemExit("the server was not ready in time")


def run_client(port: int, n_requests: int, deadline: float, n_skus: int, k: int, seed: int) -> dict:
    """One keep-alive connection, requests back to back: latencies (ms), errors, wall times."""
    rng = random.Random(seed)
    bodies = [
        json.dumps(
            {
                "sessions": [[f"sku-{rng.randrange(n_skus)}" for _ in range(rng.randint(1, 10))]],
                "k": k,
            }
        )
        for _ in range(200)
    ]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    latencies, errors = [], 0
    started = time.time()
    for i in range(n_requests):
        if time.time() > deadline:
            break
        begin = time.perf_counter()
        try:
            conn.request("POST", "/invocations", bodies[i % len(bodies)], headers)
            response = conn.getresponse()
            payload = response.read()
            ok = response.status == 200 and len(json.loads(payload)["recommendations"][0]) == k
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            ok = False
            conn.close()  # reconnects on the next request
        latencies.append((time.perf_counter() - begin) * 1000)
        errors += not ok
    return {"latencies": latencies, "errors": errors, "started": started, "ended": time.time()}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="an exported model (default: train one)")
    parser.add_argument("--requests", type=int, default=2_000, help="total timed requests")
    parser.add_argument("--clients", type=int, default=2, help="concurrent client processes")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop sending after this")
    parser.add_argument(
        "--skus", type=int, default=2_000, help="catalogue size of the trained model"
    )
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or export_default_model(Path(tmp), args.skus)
        port = free_port()
        log_path = Path(tmp) / "server.log"
        command = serving.command(model_dir, "127.0.0.1", port)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        with open(log_path, "wb") as log:
            server = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        try:
            wait_ready(port, server)
            run_client(port, 100, time.time() + 30, args.skus, args.k, seed=-1)  # warm-up
            per_client = -(-args.requests // args.clients)
            deadline = time.time() + args.max_seconds
            jobs = [
                (port, per_client, deadline, args.skus, args.k, seed)
                for seed in range(args.clients)
            ]
            with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
                results = pool.starmap(run_client, jobs)
        finally:
            server.terminate()
            server.wait(30)

    latencies = [ms for result in results for ms in result["latencies"]]
    errors = sum(result["errors"] for result in results)
    seconds = max(r["ended"] for r in results) - min(r["started"] for r in results)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    source = args.model_dir or f"trained here ({args.skus} SKUs)"
    print(f"model: {source}; cpus: {os.cpu_count()}")
    columns = ["requests", "errors", "clients", "seconds", "req/s", "p50 ms", "p99 ms", "max ms"]
    print(" ".join(f"{name:>8}" for name in columns))
    row = [
        len(latencies),
        errors,
        args.clients,
        f"{seconds:.1f}",
        f"{len(latencies) / seconds:.0f}",
    ]
    row += [f"{ms:.2f}" for ms in (p50, p99, max(latencies))]
    print(" ".join(f"{value:>8}" for value in row))
    verdict = {True: "met", False: "MISSED"}
    print(
        f"targets: p50 < {TARGET_P50_MS} ms {verdict[p50 < TARGET_P50_MS]}, "
        f"p99 < {TARGET_P99_MS} ms {verdict[p99 < TARGET_P99_MS]}"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
