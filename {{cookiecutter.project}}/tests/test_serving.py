"""Inference server: the pure parse → predict → format core, the micro-batcher, real HTTP against a
real model, and the attacks a hand-written server failed (smuggling, slow clients, floods)."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http import HTTPStatus
from pathlib import Path

import pytest
from helpers import build_tiny_model, free_port, request, wait_ping

from {{ cookiecutter.project }}.serving import server as serving
from {{ cookiecutter.project }}.serving.app import create_app
from {{ cookiecutter.project }}.serving.batching import MicroBatcher
from {{ cookiecutter.project }}.serving.contract import (
    Limits,
    Request,
    RequestError,
    format_response,
    invoke,
    parse_request,
)
from {{ cookiecutter.project }}.serving.loading import Readiness
from {{ cookiecutter.project }}.serving.protocols import MAX_HEAD_BYTES, PROTOCOLS
from {{ cookiecutter.project }}.serving.server import (
    InferenceServer,
    ServingError,
    Stack,
    create_server,
    main,
    parse_args,
)

LIMITS = Limits(max_body_bytes=2_000, max_sessions=3, max_session_length=4, max_k=10, default_k=5)
JSON = "application/json"


# --- helpers and fixtures --------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory)[0]


class EchoRecommender:
    """Stand-in model for core tests: recommends the session's own SKUs, newest first."""

    vocabulary = frozenset({"a", "b", "c"})

    def recommend(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        return [[(sku, 1.0 / (i + 1)) for i, sku in enumerate(reversed(s))][:k] for s in sessions]


@contextmanager
def running(server: InferenceServer) -> Iterator[InferenceServer]:
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(10)


def echo_server(limits: Limits = LIMITS, **kwargs) -> InferenceServer:  # type: ignore[no-untyped-def]
    return create_server(
        Path("."), "127.0.0.1", 0, limits, loader=lambda d: EchoRecommender(), **kwargs
    )


def post(server: InferenceServer, payload: object, headers: dict | None = None) -> tuple[int, dict]:
    host, port = server.server_address[:2]
    status, body = request(
        host,
        port,
        "POST",
        "/invocations",
        json.dumps(payload).encode(),
        {"Content-Type": JSON, **(headers or {})},
    )
    return status, json.loads(body)


@pytest.fixture(params=sorted(PROTOCOLS))
def parser(request: pytest.FixtureRequest) -> Stack:
    """Each HTTP parser the server can run on: the defences must hold on every one."""
    return Stack(http=request.param)


@pytest.fixture(scope="module")
def live(model_dir: Path) -> Iterator[InferenceServer]:
    """The real exported model behind a real socket."""
    with running(create_server(model_dir, "127.0.0.1", 0, LIMITS)) as server:
        assert wait_ping(*server.server_address[:2])[0] == 200
        yield server


# --- pure core: parse ------------------------------------------------------------------------

GOOD = [
    (JSON, {"sessions": [["a", "b"], ["c"]], "k": 3}, Request("sessions", [["a", "b"], ["c"]], 3)),
    ("application/json; charset=UTF-8", {"sessions": [["a"]]}, Request("sessions", [["a"]], 5)),
    ("Application/JSON", {"sessions": [["a"]], "k": None}, Request("sessions", [["a"]], 5)),
    (JSON, {"instances": [["a"], ["b", "c"]]}, Request("instances", [["a"], ["b", "c"]], 5)),
    (
        JSON,
        {"instances": [{"skus": ["a"]}, ["b"]], "k": 10},
        Request("instances", [["a"], ["b"]], 10),
    ),
    (
        JSON,
        {"sessions": [["never-seen", ""]], "k": 1},
        Request("sessions", [["never-seen", ""]], 1),
    ),
    (JSON, {"sessions": [["é", "商品"]], "k": 3.0}, Request("sessions", [["é", "商品"]], 3)),
]


@pytest.mark.parametrize(("content_type", "payload", "expected"), GOOD)
def test_parse_accepts(content_type: str, payload: dict, expected: Request) -> None:
    assert parse_request(json.dumps(payload).encode(), content_type, LIMITS) == expected


BAD = [
    ("text/plain", b'{"sessions": [["a"]]}', 415, "application/json"),
    ("", b'{"sessions": [["a"]]}', 415, "(none)"),
    ("application/json; charset=latin-1", b'{"sessions": [["a"]]}', 415, "UTF-8"),
    (JSON, b"", 400, "empty"),
    (JSON, b"  \n", 400, "empty"),
    (JSON, b'{"sessions": [["a"]]', 400, "not valid"),
    (JSON, b"\xff\xfe", 400, "not valid"),
    (JSON, b"x" * 2_001, 413, "max_body_bytes=2000"),
    (JSON, b'[["a"]]', 422, "JSON object"),
    (JSON, b"{}", 422, "exactly one"),
    (JSON, b'{"sessions": [["a"]], "instances": [["a"]]}', 422, "exactly one"),
    (JSON, b'{"sessions": [["a"]], "K": 3}', 422, "unknown field"),
    (JSON, b'{"sessions": "a"}', 422, "list of sessions"),
    (JSON, b'{"sessions": []}', 422, "at least one session"),
    (JSON, b'{"sessions": [["a"], ["b"], ["c"], ["d"]]}', 422, "max_sessions=3"),
    (JSON, b'{"sessions": [["a", "b", "c", "d", "e"]]}', 422, "max_session_length=4"),
    (JSON, b'{"sessions": [[]]}', 422, "at least one SKU"),
    (JSON, b'{"sessions": ["abc"]}', 422, "sessions[0] must be a list"),
    (JSON, b'{"sessions": [["a", 7]]}', 422, "sessions[0][1] is a number"),
    (JSON, b'{"sessions": [{"skus": ["a"]}]}', 422, "sessions[0] must be a list"),
    (JSON, b'{"instances": [{"items": ["a"]}]}', 422, 'without "skus"'),
    (JSON, b'{"instances": [{"skus": "a"}]}', 422, "instances[0].skus must be a list"),
    (JSON, b'{"sessions": [["a"]], "k": 0}', 422, "max_k=10"),
    (JSON, b'{"sessions": [["a"]], "k": 11}', 422, "max_k=10"),
    (JSON, b'{"sessions": [["a"]], "k": "5"}', 422, "max_k=10"),
    (JSON, b'{"sessions": [["a"]], "k": 2.5}', 422, "max_k=10"),
    (JSON, b'{"sessions": [["a"]], "k": NaN}', 422, "max_k=10"),
    (JSON, b"[" * 1_900, 400, "nested too deeply"),
    (JSON, '"x"'.encode("utf-16"), 400, "not valid UTF-8"),
    (JSON, b'{"sessions": [["a", "\\ud800"]]}', 422, "sessions[0][1] holds a lone surrogate"),
    (JSON, b'{"sessions": [["a"]], "k": true}', 422, "max_k=10"),
]


@pytest.mark.parametrize(("content_type", "body", "status", "says"), BAD)
def test_parse_rejects_with_a_reason(
    content_type: str, body: bytes, status: int, says: str
) -> None:
    with pytest.raises(RequestError) as caught:
        parse_request(body, content_type, LIMITS)
    assert caught.value.status == status
    assert says in str(caught.value)


def test_a_number_too_long_to_convert_is_a_bad_request() -> None:
    body = b'{"sessions": [["a"]], "k": ' + b"9" * 5_000 + b"}"  # over Python's 4,300 digits
    with pytest.raises(RequestError, match="not valid UTF-8 JSON.*4300 digits") as caught:
        parse_request(body, JSON, Limits())
    assert caught.value.status == 400


# --- pure core: format and invoke ------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "key"), [("sessions", "recommendations"), ("instances", "predictions")]
)
def test_format_answers_in_the_request_style(style: str, key: str) -> None:
    request = Request(style, [["a"], ["b"]], 2)  # type: ignore[arg-type]
    body = format_response(request, [[("x", 0.5), ("y", 0.25)], []], {"a", "b"})
    assert json.loads(body) == {
        key: [[{"sku": "x", "score": 0.5}, {"sku": "y", "score": 0.25}], []],
        "unknown_skus": [0, 0],
    }


def test_the_answer_counts_each_sessions_unknown_skus() -> None:
    request = Request("sessions", [["a", "zz", "a"], ["yy", "xx"], ["b"]], 2)
    body = json.loads(format_response(request, [[], [], []], {"a", "b"}))
    assert body["unknown_skus"] == [1, 2, 0]


def test_format_refuses_an_answer_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="1 lists for 2 sessions"):
        format_response(Request("sessions", [["a"], ["b"]], 2), [[("x", 1.0)]], {"a"})


def test_invoke_predicts() -> None:
    response = invoke(b'{"sessions": [["a", "b"]], "k": 1}', JSON, EchoRecommender(), LIMITS)
    assert response.status == HTTPStatus.OK
    assert json.loads(response.body) == {
        "recommendations": [[{"sku": "b", "score": 1.0}]],
        "unknown_skus": [0],
    }


def test_invoke_without_a_model_is_503_with_the_reason() -> None:
    response = invoke(b'{"sessions": [["a"]]}', JSON, None, LIMITS, "model is loading from /m")
    assert response.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert json.loads(response.body) == {"error": "model is loading from /m"}


def test_invoke_reports_bad_input_before_model_state() -> None:
    assert invoke(b"{", JSON, None, LIMITS).status == HTTPStatus.BAD_REQUEST


class Broken:
    vocabulary = frozenset({"a"})

    def recommend(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        raise RuntimeError("secret internal detail")


def test_invoke_hides_predictor_errors_from_the_client(caplog: pytest.LogCaptureFixture) -> None:
    response = invoke(b'{"sessions": [["a"]]}', JSON, Broken(), LIMITS)
    assert response.status == HTTPStatus.INTERNAL_SERVER_ERROR
    assert "secret" not in response.body.decode()
    assert "see its log" in json.loads(response.body)["error"]
    assert "secret internal detail" in caplog.text  # the server log has the trace


# --- real HTTP, real model -------------------------------------------------------------------


def test_ping_is_200_with_an_empty_body(live: InferenceServer) -> None:
    assert request(*live.server_address[:2], "GET", "/ping") == (200, b"")


def test_sessions_style(live: InferenceServer) -> None:
    status, answer = post(live, {"sessions": [["sku-1", "sku-2"], ["sku-7"]], "k": 4})
    assert status == 200
    assert [len(recs) for recs in answer["recommendations"]] == [4, 4]
    assert answer["unknown_skus"] == [0, 0]
    for recs in answer["recommendations"]:
        scores = [rec["score"] for rec in recs]
        assert scores == sorted(scores, reverse=True)
        assert all(rec["sku"].startswith("sku-") for rec in recs)


def test_instances_style_lists_and_objects(live: InferenceServer) -> None:
    instances = [["sku-1"], {"skus": ["sku-3", "not-a-sku"]}]
    status, answer = post(live, {"instances": instances, "k": 2})
    assert status == 200
    assert [len(recs) for recs in answer["predictions"]] == [2, 2]
    assert answer["unknown_skus"] == [0, 1]


def test_unknown_skus_are_tolerated(live: InferenceServer) -> None:
    status, answer = post(live, {"sessions": [["not-a-sku", "nor-this"], ["sku-1", "not-a-sku"]]})
    assert status == 200
    assert len(answer["recommendations"][0]) == LIMITS.default_k
    assert answer["unknown_skus"] == [2, 1]  # the answer says the model ignored them


def test_the_readme_example_sends_the_default_datas_most_popular_sku() -> None:
    """The curl example must name a SKU that every default run's model knows."""
    from {{ cookiecutter.project }}.ingest.synthetic import GeneratorConfig, build_model
    from {{ cookiecutter.project }}.settings import Settings

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    sku = re.search(r"^ +sku=([0-9a-f]{64}) ", readme, re.MULTILINE)
    assert sku and """-d '{"k": 5, "sessions": [["'"$sku"'", "not-a-sku"]]}'""" in readme
    config = GeneratorConfig.from_settings(Settings(_env_file=None))
    assert sku.group(1) == build_model(config).sku_hashes[0]


def test_extra_headers_are_ignored(live: InferenceServer) -> None:
    headers = {
        "X-Amzn-SageMaker-Custom-Attributes": "anything",
        "X-Amzn-Trace-Id": "Root=1-2-3",
        "Accept": "*/*",
        "X-Whatever": "1",
    }
    assert post(live, {"sessions": [["sku-1"]], "k": 1}, headers)[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "says"),
    [
        (
            "POST",
            "/invocations",
            b'{"sessions": [["a"]]}',
            {"Content-Type": "text/csv"},
            415,
            "application/json",
        ),
        ("POST", "/invocations", b"{oops", {"Content-Type": JSON}, 400, "not valid"),
        ("POST", "/invocations", b"", {"Content-Type": JSON}, 400, "empty"),
        (
            "POST",
            "/invocations",
            b'{"sessions": [[1]]}',
            {"Content-Type": JSON},
            422,
            "SKUs must be strings",
        ),
        (
            "POST",
            "/invocations",
            b'{"sessions": [["a"]], "k": 99}',
            {"Content-Type": JSON},
            422,
            "max_k=10",
        ),
        (
            "POST",
            "/invocations",
            json.dumps({"sessions": [["a"]] * 4}).encode(),
            {"Content-Type": JSON},
            422,
            "max_sessions=3",
        ),
        (
            "POST",
            "/invocations",
            json.dumps({"sessions": [["a"] * 5]}).encode(),
            {"Content-Type": JSON},
            422,
            "max_session_length=4",
        ),
        ("GET", "/invocations", None, {}, 405, "accepts POST"),
        ("POST", "/ping", b"{}", {"Content-Type": JSON}, 405, "accepts GET"),
        ("GET", "/predict", None, {}, 404, "/invocations"),
    ],
)
def test_http_errors_are_json_and_keep_the_connection(
    live: InferenceServer,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict,
    status: int,
    says: str,
) -> None:
    conn = http.client.HTTPConnection(*live.server_address[:2], timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        assert response.status == status
        assert response.getheader("Content-Type") == JSON
        assert says in json.loads(response.read())["error"]
        conn.request("GET", "/ping")  # same connection: the error left it in a clean state
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def raw_exchange(server: InferenceServer, head: bytes) -> tuple[int, dict, bytes]:
    """Send raw bytes, read until the server closes: (status, headers, body)."""
    with socket.create_connection(server.server_address[:2], timeout=30) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_part, _, body = data.partition(b"\r\n\r\n")
    lines = head_part.decode().split("\r\n")
    headers = {name.title(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_oversized_body_is_refused_from_content_length(live: InferenceServer) -> None:
    # The body is never sent: the server must answer from the header alone and close.
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    status, headers, body = raw_exchange(live, head + b"Content-Length: 1000000000\r\n\r\n")
    assert status == 413
    assert headers["Connection"] == "close"
    assert "max_body_bytes=2000" in json.loads(body)["error"]


def test_chunked_body_is_refused(live: InferenceServer) -> None:
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    status, _, body = raw_exchange(live, head)
    assert status == 411
    assert "Content-Length" in json.loads(body)["error"]


def test_other_methods_are_405(live: InferenceServer) -> None:
    status, headers, body = raw_exchange(
        live, b"DELETE /invocations HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert (status, headers["Allow"]) == (405, "POST")
    assert "DELETE is not supported" in json.loads(body)["error"]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /ping HTTP/1.1\r\nHost: x\r\nnot a header line\r\n\r\n",
        b"GET /ping HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    ],
    ids=["bad-line", "bad-length"],
)
def test_malformed_http_gets_a_json_error(parser: Stack, head: bytes) -> None:
    with running(echo_server(stack=parser)) as server:
        status, headers, body = raw_exchange(server, head)
    assert (status, headers["Content-Type"], headers["Connection"]) == (400, JSON, "close")
    assert "not valid HTTP/1.1" in json.loads(body)["error"]


def test_requests_are_quiet_unless_asked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    for log_requests, lines in [(False, 0), (True, 1)]:
        caplog.clear()
        server = create_server(
            Path("/nonexistent"), "127.0.0.1", 0, LIMITS, log_requests=log_requests
        )
        with running(server):
            wait_ping(*server.server_address[:2])
            caplog.clear()
            request(*server.server_address[:2], "GET", "/nope")
        assert len([r for r in caplog.records if "GET /nope 404" in r.getMessage()]) == lines


# --- model loading states --------------------------------------------------------------------


def corrupt_model_dir(tmp: Path) -> Path:
    (tmp / "saved_model.pb").write_bytes(b"not a SavedModel")
    return tmp


@pytest.mark.parametrize(
    ("make_dir", "says"),
    [
        (lambda tmp: tmp / "absent", "does not exist"),
        (lambda tmp: tmp, "is empty"),
        (corrupt_model_dir, "could not load"),
    ],
    ids=["missing", "empty", "corrupt"],
)
def test_ping_is_503_with_the_reason_when_the_model_cannot_load(
    tmp_path: Path, make_dir, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    directory = make_dir(tmp_path)
    with running(create_server(directory, "127.0.0.1", 0, LIMITS)) as server:
        status, body = wait_ping(*server.server_address[:2])
        assert status == 503
        assert body["state"] == "failed"
        assert says in body["error"] and str(directory) in body["error"]
        assert post(server, {"sessions": [["a"]]})[0] == 503
        wait_ping(*server.server_address[:2])  # asking again does not log again
    assert len([r for r in caplog.records if says in r.getMessage()]) == 1


def test_port_opens_while_the_model_loads() -> None:
    release = threading.Event()

    def slow_loader(model_dir: Path) -> EchoRecommender:
        release.wait(10)
        return EchoRecommender()

    server = create_server(Path("."), "127.0.0.1", 0, LIMITS, loader=slow_loader)
    with running(server):
        host, port = server.server_address[:2]
        status, body = request(host, port, "GET", "/ping")
        assert (status, json.loads(body)["state"]) == (503, "loading")
        release.set()
        assert wait_ping(host, port, 10)[0] == 200


def test_ping_waits_for_every_worker_of_the_server() -> None:
    """Workers share the socket: a 200 from one worker while another still loads would let the
    next request meet that one's 503."""
    import multiprocessing

    readiness = Readiness(2, multiprocessing.get_context("spawn"))
    app = create_app(Path("."), LIMITS, loader=lambda d: EchoRecommender(), readiness=readiness)
    server = InferenceServer(app, LIMITS, serving.bind("127.0.0.1", 0))
    with running(server):
        host, port = server.server_address[:2]
        deadline = time.monotonic() + 10
        while (body := json.loads(request(host, port, "GET", "/ping")[1]))["error"].startswith(
            "model is loading from"
        ):
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
        assert body == {"error": "model is loading in 1 of 2 worker processes", "state": "loading"}
        assert post(server, {"sessions": [["a"]]})[0] == 200  # this worker answers meanwhile
        readiness.mark_ready()  # the other worker
        assert request(host, port, "GET", "/ping")[0] == 200


# --- stopping ----------------------------------------------------------------------------------


def test_stop_lets_an_in_flight_request_finish() -> None:
    entered, release = threading.Event(), threading.Event()

    class Slow(EchoRecommender):
        def recommend(self, sessions, k):  # type: ignore[no-untyped-def]
            if sessions != [[""]]:  # not the warm-up call
                entered.set()
                release.wait(10)
            return super().recommend(sessions, k)

    server = create_server(Path("."), "127.0.0.1", 0, LIMITS, loader=lambda d: Slow())
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    wait_ping(host, port, 10)
    idle = http.client.HTTPConnection(host, port, timeout=30)  # an idle keep-alive connection
    idle.request("GET", "/ping")
    idle.getresponse().read()
    answers: list[http.client.HTTPResponse] = []
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("POST", "/invocations", b'{"sessions": [["a"]]}', {"Content-Type": JSON})
    client = threading.Thread(target=lambda: answers.append(conn.getresponse()))
    client.start()
    assert entered.wait(10)
    server.stop()
    time.sleep(0.7)  # the server has stopped accepting; the request is still in the model
    assert thread.is_alive()
    with pytest.raises(ConnectionError):
        socket.create_connection((host, port), timeout=2).close()
    release.set()
    thread.join(10)
    client.join(10)
    assert not thread.is_alive()
    assert answers[0].status == 200
    assert answers[0].getheader("Connection") == "close"
    idle.close()
    conn.close()


def test_sigterm_during_requests_exits_cleanly(model_dir: Path) -> None:
    port = free_port()
    command = serving.command(model_dir, "127.0.0.1", port)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        assert wait_ping("127.0.0.1", port)[0] == 200
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        idle.request("GET", "/ping")
        idle.getresponse().read()  # stays open and idle: must not hold up the exit
        statuses: list[int] = []

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            body = json.dumps({"sessions": [["sku-1", "sku-2"]], "k": 5})
            try:
                while True:
                    conn.request("POST", "/invocations", body, {"Content-Type": JSON})
                    response = conn.getresponse()
                    response.read()
                    statuses.append(response.status)
                    if response.getheader("Connection") == "close":
                        return
            except (ConnectionError, http.client.HTTPException):
                return  # the server is gone: new requests are refused, as they should be

        clients = [threading.Thread(target=client) for _ in range(3)]
        for thread in clients:
            thread.start()
        time.sleep(1.0)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        returncode = server.wait(30)
        elapsed = time.monotonic() - started
        for thread in clients:
            thread.join(10)
        idle.close()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    log = server.stdout.read().decode() if server.stdout else ""
    assert returncode == 0, log
    assert elapsed < 10, log
    assert statuses and set(statuses) == {200}
    assert "drained" in log


def test_sigterm_under_load_drops_no_request_and_exits_in_time(model_dir: Path) -> None:
    """bench/bench_load.py for a few seconds (8 clients in another process), then SIGTERM."""
    script = Path(__file__).parents[1] / "bench" / "bench_load.py"
    command = [sys.executable, str(script), "--seconds", "3", "--concurrency", "8"]
    command += ["--model-dir", str(model_dir), "--k", "5", "--json"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    result = json.loads(done.stdout.splitlines()[-1])
    assert done.returncode == 0, (result, done.stderr[-2000:])
    assert result["requests"] > 100 and result["failed"] == 0, result
    assert result["exit_code"] == 0 and result["exit_seconds"] < 30 and result["drained"], result
    assert result["refused_after_sigterm"] > 0  # the clients were still sending when it stopped


# --- configuration -----------------------------------------------------------------------------


def test_port_and_model_dir_come_from_the_container_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "9123")
    monkeypatch.setenv("MODEL_DIR", "/somewhere/model")
    args = parse_args(["serve"])  # SageMaker runs the image as `serve`
    assert (args.port, args.model_dir, args.host) == (9123, Path("/somewhere/model"), "0.0.0.0")
    args = parse_args(["--port", "7000", "--model-dir", "m", "--host", "127.0.0.1"])
    assert (args.port, args.model_dir, args.host) == (7000, Path("m"), "127.0.0.1")
    monkeypatch.delenv("SAGEMAKER_BIND_TO_PORT")
    monkeypatch.delenv("MODEL_DIR")
    assert (parse_args([]).port, parse_args([]).model_dir) == (8080, Path("/opt/ml/model"))


def test_a_taken_port_is_a_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServingError, match=f"127.0.0.1:{port}.*SAGEMAKER_BIND_TO_PORT"):
            create_server(Path("."), "127.0.0.1", port, LIMITS)
        assert main(["--host", "127.0.0.1", "--port", str(port), "--model-dir", "."]) == 2
    assert "--port" in caplog.text


def test_a_model_that_cannot_load_is_unhealthy_and_the_log_says_why(
    model_dir: Path, tmp_path: Path
) -> None:
    """The real process, as SageMaker runs it, on a half-unpacked archive and on no model at all."""
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    pb = broken / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:1000])  # a truncated archive member
    shutil.rmtree(broken / "variables")
    for directory, says in [(broken, "could not load"), (tmp_path / "absent", "does not exist")]:
        port = free_port()
        log_path = tmp_path / f"{directory.name}.log"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        with log_path.open("wb") as log:
            command = serving.command(directory, "127.0.0.1", port)
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            status, body = wait_ping("127.0.0.1", port)
            assert (status, body["state"]) == (503, "failed")
            assert says in body["error"] and str(directory) in body["error"]
            assert process.poll() is None  # still answering: the deployer reads the reason
        finally:
            process.terminate()
            process.wait(30)
        log_text = log_path.read_text()
        assert f"ERROR {says}" in log_text or f"ERROR model directory {directory}" in log_text
        assert says in log_text, log_text


def test_a_sent_oversized_body_still_gets_its_413(live: InferenceServer) -> None:
    """The client sends the whole body before reading: the server must not reset it meanwhile."""
    for size in (LIMITS.max_body_bytes + 1, 3_000_000):
        status, body = request(
            *live.server_address[:2], "POST", "/invocations", b" " * size, {"Content-Type": JSON}
        )
        assert status == 413
        assert "max_body_bytes=2000" in json.loads(body)["error"]


def test_expect_100_continue_is_refused_before_an_oversized_body() -> None:
    with (
        running(echo_server()) as server,
        socket.create_connection(server.server_address[:2], timeout=30) as sock,
    ):
        head = "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n".encode())
        answer = sock.recv(65536)  # no body sent: the answer comes from the headers alone
    assert answer.startswith(b"HTTP/1.1 413"), answer


def test_the_server_serves_its_openapi_description(live: InferenceServer) -> None:
    status, body = request(*live.server_address[:2], "GET", "/openapi.json")
    assert status == 200
    document = json.loads(body)
    assert document == live.app.openapi()
    assert document["info"]["x-limits"]["max_k"] == LIMITS.max_k  # this server's limits
    schemas = document["components"]["schemas"]
    assert schemas["SessionsRequest"]["properties"]["sessions"]["maxItems"] == LIMITS.max_sessions
    body_spec = document["paths"]["/invocations"]["post"]["requestBody"]
    assert body_spec["x-max-body-bytes"] == LIMITS.max_body_bytes


# --- dynamic batching --------------------------------------------------------------------------


class Counting(EchoRecommender):
    """Echo that records the batches it is called with (slowly: 20 ms a call)."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []

    def recommend(self, sessions, k):  # type: ignore[no-untyped-def]
        self.batches.append((len(sessions), k))
        time.sleep(0.02)
        return super().recommend(sessions, k)


def test_concurrent_requests_share_model_calls_and_get_their_own_answers() -> None:
    model = Counting()

    async def scenario() -> list[list[list[tuple[str, float]]]]:
        batcher = MicroBatcher(model.recommend, max_batch=8, wait_s=0.01)
        jobs = [batcher.recommend([[f"s{i}", f"t{i}"]], 1 + i % 3) for i in range(20)]
        answers = await asyncio.gather(*jobs)
        batcher.close()
        return answers

    answers = asyncio.run(scenario())
    for i, recs in enumerate(answers):  # each request's own sessions, cut to its own k
        assert recs == EchoRecommender().recommend([[f"s{i}", f"t{i}"]], 1 + i % 3)
    assert len(model.batches) < 20 and max(size for size, _ in model.batches) <= 8
    assert sum(size for size, _ in model.batches) == 20


def test_a_lone_request_is_not_held_back() -> None:
    async def scenario() -> float:
        batcher = MicroBatcher(EchoRecommender().recommend, max_batch=8, wait_s=5.0)
        started = time.perf_counter()
        await batcher.recommend([["a"]], 1)
        batcher.close()
        return time.perf_counter() - started

    assert asyncio.run(scenario()) < 0.5  # nothing else was arriving: no wait for the batch


def test_a_failing_batch_fails_each_request_with_a_500(caplog: pytest.LogCaptureFixture) -> None:
    server = create_server(Path("."), "127.0.0.1", 0, LIMITS, loader=lambda d: Broken())
    server.app.state.endpoint.slot.predictor = Broken()  # skip the (failing) warm-up
    with running(server):
        host, port = server.server_address
        status, body = request(
            host, port, "POST", "/invocations", b'{"sessions": [["a"]]}', {"Content-Type": JSON}
        )
    assert status == 500 and "secret" not in body.decode()


def test_concurrent_http_requests_are_batched() -> None:
    model = Counting()
    server = create_server(Path("."), "127.0.0.1", 0, LIMITS, loader=lambda d: model)
    with running(server):
        host, port = server.server_address
        wait_ping(host, port, 10)
        model.batches.clear()
        results: list[int] = []

        def client(i: int) -> None:
            payload = json.dumps({"sessions": [[f"sku-{i}"]], "k": 1}).encode()
            status, body = request(
                host, port, "POST", "/invocations", payload, {"Content-Type": JSON}
            )
            assert json.loads(body)["recommendations"] == [[{"sku": f"sku-{i}", "score": 1.0}]]
            results.append(status)

        clients = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(30)
    assert results == [200] * 16
    assert len(model.batches) < 16  # while the model was busy, requests queued into one call


# --- what an attacker tries ----------------------------------------------------------------------

QUICK = Limits(max_body_bytes=2_000, read_timeout_s=1.0, max_connections=4)
HEAD = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def test_conflicting_content_lengths_are_refused(parser: Stack) -> None:
    """Request smuggling: two lengths for one body must never be guessed between."""
    head = HEAD + b"Content-Length: 21\r\nContent-Length: 5\r\n\r\n"
    with running(echo_server(stack=parser)) as server:
        status, headers, body = raw_exchange(server, head + b'{"sessions": [["a"]]}')
    assert (status, headers["Connection"]) == (400, "close")
    assert "conflicting Content-Length" in json.loads(body)["error"]


def test_a_head_over_the_cap_is_refused(parser: Stack) -> None:
    """An endless head (one header line after another) must not grow the server's memory."""
    with running(echo_server(stack=parser)) as server:
        sock = socket.create_connection(server.server_address, timeout=10)
        sock.sendall(HEAD)
        answer = b""
        try:
            for i in range(2 * MAX_HEAD_BYTES // 100):
                sock.sendall(b"X-Filler-%05d: " % i + b"x" * 84 + b"\r\n")
                time.sleep(0.001)  # separate reads, as a trickling client's
        except OSError:  # closed on us after the 400
            pass
        while chunk := sock.recv(65536):
            answer += chunk
        sock.close()
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert f"a head over {MAX_HEAD_BYTES // 1024} KiB".encode() in answer


@pytest.mark.parametrize("part", ["head", "body"])
def test_a_trickling_request_gets_408_within_its_deadline(parser: Stack, part: str) -> None:
    """One byte every 0.2 s never trips a per-read timeout; the per-request deadline cuts it."""
    with running(echo_server(QUICK, stack=parser)) as server:
        sock = socket.create_connection(server.server_address, timeout=10)
        trickle = (
            HEAD + b"Content-Length: 21\r\n\r\n" if part == "head" else b'{"sessions": [["a"]]}'
        )
        if part == "body":
            sock.sendall(HEAD + b"Content-Length: 21\r\n\r\n")
        started = time.monotonic()
        answer = b""
        try:
            for byte in trickle:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:  # closed on us after the 408
            pass
        while chunk := sock.recv(65536):
            answer += chunk
        elapsed = time.monotonic() - started
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"read_timeout_s=1.0" in answer
    assert elapsed < QUICK.read_timeout_s + 1.5


def test_connections_over_the_cap_get_a_clear_503(
    parser: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    with running(echo_server(QUICK, stack=parser)) as server:
        host, port = server.server_address
        wait_ping(host, port, 10)
        held = [
            socket.create_connection((host, port), timeout=10) for _ in range(QUICK.max_connections)
        ]
        time.sleep(0.2)
        status, headers, body = raw_exchange(server, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (status, headers["Connection"]) == (503, "close")
        assert f"max_connections={QUICK.max_connections}" in json.loads(body)["error"]
        held.pop().close()
        time.sleep(0.2)
        assert request(host, port, "GET", "/ping")[0] == 200  # room again
        for sock in held:
            sock.close()
    assert "max_connections" in caplog.text


def test_a_client_that_leaves_costs_one_log_line(
    parser: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with running(echo_server(QUICK, stack=parser)) as server:
        wait_ping(*server.server_address, 10)
        caplog.clear()
        for _ in range(3):
            with socket.create_connection(server.server_address, timeout=10) as sock:
                sock.sendall(HEAD + b'Content-Length: 100\r\n\r\n{"sess')  # then leaves
            time.sleep(0.3)
    lines = [
        r.getMessage() for r in caplog.records if r.name.startswith(("uvicorn", "{{ cookiecutter.project }}"))
    ]
    assert len([line for line in lines if "left before its answer" in line]) == 3, lines
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)
