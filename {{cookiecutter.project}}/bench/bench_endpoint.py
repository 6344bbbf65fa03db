"""The endpoint side by side with a baseline server: same model, same machine, one run.

Run: python bench/bench_endpoint.py [--model-dir DIR] [--seconds 30] [--clients 1,16,64]
     [--baseline OLD_SERVING_PY] [--workers 1,2]

For each server (the baseline first, if given, then this project's): start it as its own process,
then for each client count run bench_load's keep-alive clients (threads of this process, one
single-session request after another) for --seconds; then the largest legal request (256
sessions of 200 SKUs, k=100) 10 times, with the server's resident memory before and after; the
last client count ends with SIGTERM under load (every request the server read must get its 200).

--baseline is a single-module server with the same command line (e.g. the hand-written
`http.server` one this project replaced: `git show <commit>:<path>/serving.py > old.py`); its
relative imports are pointed at this package, and it runs from a temporary file, never from the
package.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_load import Client, request_bodies, run_load
from bench_serving import export_default_model, free_port, percentile, wait_ready

from {{ cookiecutter.project }}.serving import server as serving

PACKAGE = "{{ cookiecutter.project }}"


def baseline_command(source: Path, tmp: Path) -> list[str]:
    module = tmp / "baseline_server.py"
    module.write_text(source.read_text().replace("from .", f"from {PACKAGE}."))
    return [sys.executable, str(module)]


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of the server and its children (workers): now and peak, MiB."""
    pids = [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    total = {"VmRSS": 0.0, "VmHWM": 0.0}
    for one in pids:
        for line in Path(f"/proc/{one}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in total:
                total[key] += int(value.split()[0]) / 1024
    return {"rss_mb": round(total["VmRSS"]), "peak_mb": round(total["VmHWM"])}


def wait_all_ready(port: int, in_a_row: int = 30, timeout_s: float = 180) -> None:
    """/ping is 200 once one worker is ready: wait until answers in a row come from ready ones."""
    import http.client

    deadline, ok = time.monotonic() + timeout_s, 0
    body = json.dumps({"sessions": [["sku-1"]], "k": 1})
    while ok < in_a_row and time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # new: any worker
        conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        ok = ok + 1 if conn.getresponse().status == 200 else 0
        conn.close()
        time.sleep(0.05 if ok else 0.5)


def steady_load(port: int, seconds: float, clients: int, n_skus: int, k: int) -> dict:
    runners = [Client(port, request_bodies(n_skus, k, seed), k) for seed in range(clients)]
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(target=c.run, args=(lambda: time.monotonic() > until,)) for c in runners
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies = [ms for c in runners for ms in c.tally.latencies_ms]
    return {
        "clients": clients,
        "req_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "errors": sum(len(c.tally.failed) for c in runners),
    }


def largest_request(port: int, n_skus: int, repeat: int = 10) -> dict:
    import http.client

    sessions = [[f"sku-{(i * 200 + j) % n_skus}" for j in range(200)] for i in range(256)]
    body = json.dumps({"sessions": sessions, "k": 100})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    latencies, errors = [], 0
    for _ in range(repeat):
        begin = time.perf_counter()
        conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        errors += (
            response.status != 200 or len(json.loads(response.read())["recommendations"]) != 256
        )
        latencies.append((time.perf_counter() - begin) * 1000)
    conn.close()
    return {
        "p50_ms": round(percentile(latencies, 50)),
        "max_ms": round(max(latencies)),
        "errors": errors,
    }


def bench_server(
    name: str, command: list[str], args: argparse.Namespace, model_dir: Path, tmp: Path
) -> dict:
    port = free_port()
    full = [*command, "--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    log_path = tmp / f"{name}.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(full, stdout=log, stderr=log, env=env)
    result: dict = {"server": name, "loads": []}
    try:
        wait_ready(port, server)
        wait_all_ready(port)
        warm = Client(port, request_bodies(args.skus, args.k, seed=-1), args.k)
        warm_until = time.monotonic() + 2
        warm.run(lambda: time.monotonic() > warm_until)
        counts = [int(c) for c in args.clients.split(",")]
        for clients in counts[:-1]:
            result["loads"].append(steady_load(port, args.seconds, clients, args.skus, args.k))
            print(name, result["loads"][-1], flush=True)
        before = memory_mb(server.pid)
        big = largest_request(port, args.skus)
        result["largest"] = {**big, "memory_before": before, "memory_after": memory_mb(server.pid)}
        print(name, "largest", result["largest"], flush=True)
        last = run_load(server, port, args.seconds, counts[-1], args.skus, args.k)
        result["loads"].append(
            {
                "clients": counts[-1],
                "req_per_s": round(last["req_per_s"]),
                "p50_ms": last["p50_ms"],
                "p99_ms": last["p99_ms"],
                "errors": last["failed"],
            }
        )
        drained = "stopped (drained)" in log_path.read_text()
        result["sigterm"] = {
            "exit_code": last["exit_code"],
            "exit_s": last["exit_seconds"],
            "answered_after": last["answered_after_sigterm"],
            "failed": last["failed"],
            "drained": drained,
        }
        print(name, result["loads"][-1], result["sigterm"], flush=True)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="an exported model (default: train one)")
    parser.add_argument("--seconds", type=float, default=30.0, help="load per client count")
    parser.add_argument("--clients", default="1,16,64", help="client counts (the last: SIGTERM)")
    parser.add_argument("--baseline", type=Path, help="a single-module server to compare with")
    parser.add_argument("--workers", default="1", help="this server's worker counts to try")
    parser.add_argument("--skus", type=int, default=2_000, help="catalogue of the trained model")
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir = args.model_dir or export_default_model(tmp, args.skus)
        args.skus = json.loads((model_dir / "metadata.json").read_text())["vocabulary_size"]
        servers = []
        if args.baseline:
            servers.append(("baseline", baseline_command(args.baseline, tmp)))
        command = serving.command(model_dir, "127.0.0.1", 0)[:3]  # python -m <module>
        for workers in args.workers.split(","):
            servers.append((f"this-w{workers}", [*command, "--workers", workers]))
        results = [bench_server(name, cmd, args, model_dir, tmp) for name, cmd in servers]
    print(f"cpus: {os.cpu_count()}; {args.seconds:.0f} s per client count; k={args.k}")
    print(f"{'server':>9} {'clients':>7} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    for result in results:
        for load in result["loads"]:
            row = [load[key] for key in ("clients", "req_per_s", "p50_ms", "p99_ms", "errors")]
            print(f"{result['server']:>9} " + " ".join(f"{value:>7}" for value in row))
    for result in results:
        print(
            f"{result['server']}: largest request {result['largest']}; SIGTERM {result['sigterm']}"
        )
    print(json.dumps(results))
    ok = all(r["sigterm"]["drained"] and not r["sigterm"]["failed"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
