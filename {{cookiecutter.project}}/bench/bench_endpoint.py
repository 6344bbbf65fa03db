"""The endpoint side by side with a baseline server: same model, same machine, one run.

Run: python bench/bench_endpoint.py [--model-dir DIR] [--seconds 30] [--clients 1,16,64]
     [--baseline OLD_SERVING_PY] [--workers 1,2] [--stacks httptools/auto,h11/asyncio]
     [--client-processes 2]

For each server (the baseline first, if given, then this project's on each stack, HTTP parser /
event loop, and worker count): start it as its own process, then for each client count run
bench_load's keep-alive clients (one single-session request after another) for --seconds, split
across --client-processes processes (0: threads of this process, whose GIL the clients then share:
the mode of the README's figures of 2026-12-05); the server's CPU time per request (its workers
included) and the clients' are measured over the same window. Then the largest legal request (256
sessions of 200 SKUs, k=100) 10 times, with the server's resident memory before and after; then
SIGTERM under load (the last client count, threads, --sigterm-seconds): every request the server
read must get its 200.

--baseline is a single-module server with the same command line (e.g. the hand-written
`http.server` one this project replaced: `git show <commit>:<path>/serving.py > old.py`); its
relative imports are pointed at this package, and it runs from a temporary file, never from the
package.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench_load import Client, request_bodies, run_load
from bench_serving import export_default_model, free_port, percentile, wait_ready

from {{ cookiecutter.project }}.serving import server as serving

PACKAGE = "{{ cookiecutter.project }}"


def baseline_command(source: Path, tmp: Path) -> list[str]:
    module = tmp / "baseline_server.py"
    module.write_text(source.read_text().replace("from .", f"from {PACKAGE}."))
    return [sys.executable, str(module)]


def family(pid: int) -> list[int]:
    """The server and its children (workers)."""
    return [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of the server and its children (workers): now and peak, MiB."""
    total = {"VmRSS": 0.0, "VmHWM": 0.0}
    for one in family(pid):
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


def client_share(
    port: int, seeds: list[int], n_skus: int, k: int, start_at: float, seconds: float
) -> tuple[list[float], int, float, float]:
    """Clients (threads) for `seeds`, from wall-clock `start_at` for `seconds`: their latencies,
    their errors, the seconds they took and the CPU seconds this process used meanwhile."""
    runners = [Client(port, request_bodies(n_skus, k, seed), k) for seed in seeds]
    time.sleep(max(0.0, start_at - time.time()))
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(target=c.run, args=(lambda: time.monotonic() > until,)) for c in runners
    ]
    started, cpu_before = time.perf_counter(), sum(os.times()[:2])
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - started, sum(os.times()[:2]) - cpu_before
    latencies = [ms for c in runners for ms in c.tally.latencies_ms]
    return latencies, sum(len(c.tally.failed) for c in runners), elapsed, cpu


def steady_load(
    server_pid: int,
    port: int,
    seconds: float,
    clients: int,
    pool: ClientPool | None,
    n_skus: int,
    k: int,
) -> dict:
    """`clients` keep-alive clients for `seconds`, in the pool's processes (None: this one)."""
    seeds = list(range(clients))
    server_pids = family(server_pid)
    server_cpu = cpu_seconds(server_pids)
    if pool is None:
        shares = [client_share(port, seeds, n_skus, k, time.time(), seconds)]
    else:
        processes = pool.processes
        start_at = time.time() + 0.5  # every process has built its clients by then
        futures = [
            pool.executor.submit(
                client_share, port, seeds[i::processes], n_skus, k, start_at, seconds
            )
            for i in range(min(processes, clients))
        ]
        shares = [future.result() for future in futures]
    server_cpu = cpu_seconds(server_pids) - server_cpu
    latencies = [ms for share in shares for ms in share[0]]
    requests = max(1, len(latencies))
    return {
        "clients": clients,
        "req_per_s": round(len(latencies) / max(share[2] for share in shares)),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "errors": sum(share[1] for share in shares),
        "server_cpu_ms": round(server_cpu * 1000 / requests, 3),  # per request
        "client_cpu_ms": round(sum(share[3] for share in shares) * 1000 / requests, 3),
    }


@dataclass(frozen=True)
class ClientPool:
    """The client processes, started (and this module imported in each) before any timing."""

    executor: ProcessPoolExecutor
    processes: int

    @classmethod
    def warm(cls, processes: int) -> ClientPool:
        spawn = multiprocessing.get_context("spawn")  # no fork: the model was trained here
        executor = ProcessPoolExecutor(processes, mp_context=spawn)
        for future in [executor.submit(time.sleep, 1.0) for _ in range(processes)]:
            future.result()
        return cls(executor, processes)


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
    name: str,
    command: list[str],
    args: argparse.Namespace,
    model_dir: Path,
    tmp: Path,
    pool: ClientPool | None,
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
        for clients in counts:
            load = steady_load(server.pid, port, args.seconds, clients, pool, args.skus, args.k)
            result["loads"].append(load)
            print(name, load, flush=True)
        before = memory_mb(server.pid)
        big = largest_request(port, args.skus)
        result["largest"] = {**big, "memory_before": before, "memory_after": memory_mb(server.pid)}
        print(name, "largest", result["largest"], flush=True)
        last = run_load(server, port, args.sigterm_seconds, counts[-1], args.skus, args.k)
        drained = "stopped (drained)" in log_path.read_text()
        result["sigterm"] = {
            "exit_code": last["exit_code"],
            "exit_s": last["exit_seconds"],
            "answered_after": last["answered_after_sigterm"],
            "failed": last["failed"],
            "drained": drained,
        }
        print(name, "SIGTERM", result["sigterm"], flush=True)
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
    parser.add_argument(
        "--stacks",
        default="httptools/auto",
        help="this server's HTTP parser/event loop pairs (e.g. h11/asyncio,httptools/uvloop)",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=2,
        help="processes the clients are split across (0: threads of this process)",
    )
    parser.add_argument(
        "--sigterm-seconds", type=float, default=5.0, help="load before SIGTERM (last count)"
    )
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
        for stack in args.stacks.split(","):
            http, loop = stack.split("/")
            for workers in args.workers.split(","):
                options = ["--workers", workers, "--http", http, "--loop", loop]
                servers.append((f"{http}+{loop}-w{workers}", [*command, *options]))
        pool = ClientPool.warm(args.client_processes) if args.client_processes else None
        try:
            results = [bench_server(*server, args, model_dir, tmp, pool) for server in servers]
        finally:
            if pool is not None:
                pool.executor.shutdown()
    clients_in = f"{args.client_processes} processes" if args.client_processes else "threads"
    print(f"cpus: {os.cpu_count()}; {args.seconds:.0f} s per client count; k={args.k}")
    print(f"clients in {clients_in}; CPU ms per request: the server's (workers included), theirs")
    keys = ["clients", "req_per_s", "p50_ms", "p99_ms", "errors", "server_cpu_ms", "client_cpu_ms"]
    names = ["clients", "req/s", "p50 ms", "p99 ms", "errors", "srv cpu", "cli cpu"]
    print(f"{'server':>22} " + " ".join(f"{name:>7}" for name in names))
    for result in results:
        for load in result["loads"]:
            print(f"{result['server']:>22} " + " ".join(f"{load[key]:>7}" for key in keys))
    for result in results:
        print(
            f"{result['server']}: largest request {result['largest']}; SIGTERM {result['sigterm']}"
        )
    print(json.dumps(results))
    ok = all(r["sigterm"]["drained"] and not r["sigterm"]["failed"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
