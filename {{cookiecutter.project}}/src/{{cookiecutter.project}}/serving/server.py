"""Run the endpoint: uvicorn with the defences of `protocols`, signals, the `serve` command.

The HTTP parser is httptools (C) and the event loop uvloop where installed (`--http`, `--loop`
choose others, for comparisons: bench/bench_endpoint.py). On SIGTERM uvicorn stops listening,
closes idle connections, lets in-flight requests finish (at most `GRACE_S`), then the app logs
"stopped (drained)".

Several workers (`--workers`, SERVING_WORKERS) are spawned processes serving one listening socket,
each with its own model and batcher; `_supervise` passes signals on to them. /ping answers 200 only
once every worker has its model (`Readiness`): any worker may answer the next request.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import uvicorn
from fastapi import FastAPI

from ..errors import ProjectError
from ..settings import get_settings
from .app import create_app
from .contract import Limits
from .loading import Loader, Readiness
from .protocols import PROTOCOLS

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path("/opt/ml/model")
DEFAULT_PORT = 8080
GRACE_S = 20  # SageMaker sends SIGKILL 30 s after SIGTERM
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
Loop = Literal["auto", "uvloop", "asyncio"]  # auto: uvloop where installed (not on Windows)


@dataclass(frozen=True)
class Stack:
    """What uvicorn runs on: the HTTP parser (a key of `PROTOCOLS`) and the event loop."""

    http: str = "httptools"
    loop: Loop = "auto"


class ServingError(ProjectError):
    """The server cannot start (e.g. the port is taken); the message says what to do."""


def uvicorn_config(app: FastAPI, limits: Limits, stack: Stack) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=PROTOCOLS[stack.http],
        loop=stack.loop,
        lifespan="on",
        access_log=False,  # the app logs requests when asked (--log-requests)
        log_config=None,  # the process's own logging (see `main`)
        timeout_keep_alive=int(limits.idle_timeout_s),
        timeout_graceful_shutdown=GRACE_S,
    )


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it a response's head and body (two writes) wait ~40 ms on the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServingError(
            f"cannot listen on {host}:{port} ({exc.strerror}): stop whatever uses the port or "
            "choose another (--port or SAGEMAKER_BIND_TO_PORT; SERVING_PORT for the local endpoint)"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)  # worker processes serve on it
    return sock


class InferenceServer:
    """One worker in this process: `serve()` blocks (in any thread), `stop()` drains and ends it."""

    def __init__(
        self, app: FastAPI, limits: Limits, sock: socket.socket, stack: Stack = Stack()
    ) -> None:
        self.app, self.socket = app, sock
        self.server_address: tuple[str, int] = sock.getsockname()[:2]
        self._server = uvicorn.Server(uvicorn_config(app, limits, stack))

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://{host}:{port}"

    def serve(self) -> None:
        """Serve until `stop()` or SIGTERM/SIGINT (signals only in the main thread)."""
        self._server.run(sockets=[self.socket])

    def stop(self) -> None:
        self._server.should_exit = True


def create_server(
    model_dir: Path,
    host: str,
    port: int,
    limits: Limits | None = None,
    *,
    loader: Loader | None = None,
    log_requests: bool = False,
    max_batch: int = 256,
    batch_wait_ms: float = 2.0,
    stack: Stack = Stack(),
) -> InferenceServer:
    """Bind the port at once; the model starts loading when `serve()` starts the app."""
    limits = limits or Limits()
    sock = bind(host, port)
    app = create_app(
        Path(model_dir),
        limits,
        loader=loader,
        log_requests=log_requests,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
    )
    return InferenceServer(app, limits, sock, stack)


def command(model_dir: Path, host: str, port: int) -> list[str]:
    """The command line that starts this server as its own process."""
    module = [sys.executable, "-m", __name__, "--model-dir", str(model_dir)]
    return [*module, "--host", host, "--port", str(port)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; defaults follow the container contract (env vars, then built-ins)."""
    parser = argparse.ArgumentParser(description="Serve the recommender (SageMaker contract).")
    # SageMaker starts the container as `<image> serve`: accept and ignore that word.
    parser.add_argument("command", nargs="?", choices=["serve"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path(os.environ.get("MODEL_DIR", DEFAULT_MODEL_DIR)),
        help="exported model folder (default: $MODEL_DIR or /opt/ml/model)",
    )
    parser.add_argument(
        "--host", default="0.0.0.0", help="interface (default: all, as in a container)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=os.environ.get("SAGEMAKER_BIND_TO_PORT", str(DEFAULT_PORT)),  # type= checks it
        help="port (default: $SAGEMAKER_BIND_TO_PORT or 8080)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="worker processes (default: SERVING_WORKERS, else one per core for `serve`, else 1)",
    )
    parser.add_argument(
        "--log-requests",
        action="store_true",
        help="log one line per request (health checks excepted)",
    )
    parser.add_argument(
        "--http",
        choices=sorted(PROTOCOLS),
        default=Stack.http,
        help=f"HTTP parser (default: {Stack.http}, in C; h11 is pure Python)",
    )
    parser.add_argument(
        "--loop",
        choices=get_args(Loop),
        default=Stack.loop,
        help="event loop (default: auto, uvloop where installed)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Container `serve` command: run until SIGTERM/SIGINT, then drain and exit 0."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    settings = get_settings()
    workers = args.workers or settings.serving_workers
    # In the container SageMaker runs the `serve` console script (the Dockerfile's CMD), perhaps
    # with `serve` as its argument: one worker per core there; locally (python -m, cli) one.
    in_container = args.command == "serve" or Path(sys.argv[0]).name == "serve"
    workers = workers or ((os.cpu_count() or 1) if in_container else 1)
    app_args = {
        "model_dir": args.model_dir,
        "log_requests": args.log_requests,
        "max_batch": settings.serving_max_batch,
        "batch_wait_ms": settings.serving_batch_wait_ms,
    }
    stack = Stack(args.http, args.loop)
    try:
        sock = bind(args.host, args.port)
    except ServingError as exc:
        logger.error("%s", exc)
        return 2
    logger.info(
        "listening on http://%s:%d, model dir %s, %d worker(s), %s",
        args.host,
        sock.getsockname()[1],
        args.model_dir,
        workers,
        stack,
    )
    if workers == 1:
        _serve(sock, app_args, stack)
    else:
        _supervise(sock, app_args, stack, workers)
    _exit_now()


def _exit_now() -> None:
    """Skip the interpreter's teardown: TensorFlow's takes seconds (over 10 on a busy machine) and
    SageMaker kills the container 30 s after SIGTERM; nothing is left to clean up."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _serve(sock: socket.socket, app_args: dict[str, Any], stack: Stack) -> None:
    """One worker: the app on uvicorn in this process until SIGTERM/SIGINT, then drain."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)  # again in a spawned worker
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again under the handler it found:
    # make that one a no-op so that the drained worker exits 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    app = create_app(**app_args)
    InferenceServer(app, Limits(), sock, stack).serve()


def _worker(sock: socket.socket, app_args: dict[str, Any], stack: Stack) -> None:
    _serve(sock, app_args, stack)
    _exit_now()


def _supervise(sock: socket.socket, app_args: dict[str, Any], stack: Stack, workers: int) -> None:
    """Worker processes sharing the listening socket; SIGTERM/SIGINT are passed on to them.

    uvicorn's own supervisor restarts a worker that answers its health ping late, which under
    load dropped requests, and passed SIGTERM on seconds late. Here a worker that dies stops all
    (SageMaker replaces an unhealthy container), and a signal reaches the workers at once."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    spawn = multiprocessing.get_context("spawn")  # no fork: TensorFlow's threads do not survive it
    app_args = {**app_args, "readiness": Readiness(workers, spawn)}
    processes = [
        spawn.Process(target=_worker, args=(sock, app_args, stack), name=f"worker-{i}")
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    while not stop.wait(0.5):
        if dead := [p for p in processes if not p.is_alive()]:
            logger.error("%s exited with %s: stopping the others", dead[0].name, dead[0].exitcode)
            break
    sock.close()
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        process.join(GRACE_S + 5)
        if process.is_alive():
            process.kill()


if __name__ == "__main__":
    raise SystemExit(main())
