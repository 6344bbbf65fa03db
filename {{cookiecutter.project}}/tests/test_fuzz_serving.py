"""The OpenAPI description (generated from the pydantic models), and fuzzing a running server.

The server is a real process (the tiny trained model of test_serving, default limits) on
127.0.0.1. Two fuzzers:

* schemathesis generates requests from the served document (valid and schema-breaking bodies)
  and checks every answer against it: no 5xx, documented status codes and content types, response
  bodies that follow their schemas;
* hypothesis sends valid bodies, bodies that break one rule, random JSON and bytes, wrong content
  types, oversized bodies and junk headers. For every answer: never a 5xx, the process stays up,
  every error is JSON naming what to fix, and a JSON object gets 200 exactly when the document's
  request schema accepts it (so the hand-written parser and the pydantic models agree).

~2,500 requests: ~60-90 s on 2 busy cores, plus ~20 s to start the server (and to train the tiny
model if no other test did).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import schemathesis
from helpers import N_SKUS, build_tiny_model, free_port, wait_ping
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from {{ cookiecutter.project }}.serving import server as serving
from {{ cookiecutter.project }}.serving.app import create_app
from {{ cookiecutter.project }}.serving.contract import Limits

JSON = "application/json"
FUZZ_EXAMPLES = 2_100
LIMITS = Limits()


def openapi_document(limits: Limits) -> dict[str, Any]:
    """The document a server with `limits` serves (no model needed to describe it)."""
    return create_app(Path("."), limits).openapi()


DOCUMENT = openapi_document(LIMITS)


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for one schema of the description (its $refs resolve into `components`)."""
    return jsonschema.Draft202012Validator({**schema, "components": DOCUMENT["components"]})


def media_schema(path: str, method: str, where: str = "requestBody") -> dict[str, Any]:
    operation = DOCUMENT["paths"][path][method]
    holder = operation["requestBody"] if where == "requestBody" else operation["responses"][where]
    return holder["content"][JSON]["schema"]


REQUEST = validator(media_schema("/invocations", "post"))
ANSWER = validator(media_schema("/invocations", "post", "200"))
ERROR = validator({"$ref": "#/components/schemas/Error"})


# --- the description itself ------------------------------------------------------------------


def test_both_answers_count_each_sessions_unknown_skus() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    for name in ("SessionsResponse", "InstancesResponse"):
        assert "unknown_skus" in schemas[name]["required"]
        assert schemas[name]["properties"]["unknown_skus"]["items"]["minimum"] == 0


def test_the_document_shows_the_default_limits() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    session = schemas["SessionsRequest"]["properties"]["sessions"]
    assert session["maxItems"] == LIMITS.max_sessions
    assert session["items"]["maxItems"] == LIMITS.max_session_length
    k = schemas["SessionsRequest"]["properties"]["k"]
    assert k["default"] == LIMITS.default_k
    assert {"type": "integer", "minimum": 1, "maximum": LIMITS.max_k} in k["anyOf"]
    body = DOCUMENT["paths"]["/invocations"]["post"]["requestBody"]
    assert body["x-max-body-bytes"] == LIMITS.max_body_bytes
    assert DOCUMENT["info"]["x-limits"]["read_timeout_s"] == LIMITS.read_timeout_s


def test_the_description_is_valid_openapi_31() -> None:
    assert DOCUMENT["openapi"].startswith("3.1")
    for schema in DOCUMENT["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            assert method in {"get", "post"} and operation["responses"], path


def test_a_server_with_other_limits_describes_them() -> None:
    document = openapi_document(Limits(max_k=7, max_sessions=3))
    schemas = document["components"]["schemas"]
    assert schemas["InstancesRequest"]["properties"]["instances"]["maxItems"] == 3
    assert document["info"]["x-limits"]["max_k"] == 7
    assert '"maximum": 7' in json.dumps(schemas["SessionsRequest"]["properties"]["k"])


# --- the running server ----------------------------------------------------------------------


@dataclass
class Server:
    host: str
    port: int
    process: subprocess.Popen
    log: Path
    vocabulary_size: int
    tally: Counter = field(default_factory=Counter)
    conn: http.client.HTTPConnection | None = None

    def send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a keep-alive connection (a new one after the server closed it)."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            headers = {name.title(): value for name, value in response.getheaders()}
            answer = response.status, headers, response.read()
        except (OSError, http.client.HTTPException) as exc:
            assert self.process.poll() is None, f"the server died: {self.log.read_text()[-3000:]}"
            raise AssertionError(f"{method} {path} got no answer: {exc!r}") from exc
        if answer[1].get("Connection") == "close":
            self.conn.close()
            self.conn = None
        self.tally["requests"] += 1
        self.tally[f"{answer[0] // 100}xx"] += 1
        return answer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    model_dir = build_tiny_model(tmp_path_factory)[0]
    port = free_port()
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with log.open("wb") as out:
        command = [*serving.command(model_dir, "127.0.0.1", port), "--log-requests"]
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        assert wait_ping("127.0.0.1", port)[0] == 200, log.read_text()
        size = json.loads((model_dir / "metadata.json").read_text())["vocabulary_size"]
        yield Server("127.0.0.1", port, process, log, size)
    finally:
        process.terminate()
        process.wait(30)


def test_the_server_serves_its_description(server: Server) -> None:
    status, headers, body = server.send("GET", "/openapi.json", None, {})
    assert (status, headers["Content-Type"]) == (200, JSON)
    assert json.loads(body) == DOCUMENT


# --- schemathesis: requests generated from the served document ---------------------------------

SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)


@SCHEMA.parametrize()
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_schemathesis_against_the_document(server: Server, case: Any) -> None:
    """Positive and negative cases per operation, every default check of schemathesis."""
    response = case.call_and_validate(base_url=f"http://{server.host}:{server.port}")
    server.tally["schemathesis"] += 1
    assert response.status_code < 500


# --- what the hypothesis fuzzer sends ------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request, and the limit its error must name if it breaks one."""

    body: bytes
    content_type: str = JSON
    names: str = ""  # text the error must contain, e.g. "max_k=100"
    method: str = "POST"
    path: str = "/invocations"
    extra_headers: tuple[tuple[str, str], ...] = ()

    @property
    def is_plain_invocation(self) -> bool:
        """POST /invocations, JSON, no odd header, within max_body_bytes: the schema decides."""
        request = (self.method, self.path, self.content_type, self.extra_headers)
        return request == ("POST", "/invocations", JSON, ()) and (
            len(self.body) <= LIMITS.max_body_bytes
        )


known_skus = st.sampled_from([f"sku-{i}" for i in range(N_SKUS)])
skus = st.one_of(known_skus, st.text(max_size=30))  # any Unicode; never a lone surrogate
sessions_st = st.lists(st.lists(skus, min_size=1, max_size=8), min_size=1, max_size=6)
k_st = st.one_of(st.none(), st.integers(1, LIMITS.max_k), st.sampled_from([1.0, 20.0]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@st.composite
def valid_payloads(draw: st.DrawFn) -> dict[str, Any]:
    sessions = draw(sessions_st)
    payload: dict[str, Any]
    if draw(st.booleans()):
        payload = {"sessions": sessions}
    else:
        wrap = draw(st.lists(st.booleans(), min_size=len(sessions), max_size=len(sessions)))
        instances = [{"skus": s} if w else s for s, w in zip(sessions, wrap, strict=True)]
        payload = {"instances": instances}
    if (k := draw(k_st)) is not None or draw(st.booleans()):
        payload["k"] = k
    return payload


def encode(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


@st.composite
def broken_payloads(draw: st.DrawFn) -> Case:
    """A valid payload with one rule of the description broken."""
    payload = draw(valid_payloads())
    style = "sessions" if "sessions" in payload else "instances"
    rule = draw(st.sampled_from(["k", "sessions", "length", "empty", "type", "field", "surrogate"]))
    names = ""
    if rule == "k":
        payload["k"] = draw(
            st.one_of(
                st.integers(max_value=0),
                st.integers(min_value=LIMITS.max_k + 1),
                st.sampled_from([10**100, -(10**30), 2.5, "5", True, [5], {"k": 5}]),
            )
        )
        names = f"max_k={LIMITS.max_k}"
    elif rule == "sessions":
        payload[style] = [["sku-1"]] * (LIMITS.max_sessions + draw(st.integers(1, 50)))
        names = f"max_sessions={LIMITS.max_sessions}"
    elif rule == "length":
        payload[style][0] = ["sku-2"] * (LIMITS.max_session_length + draw(st.integers(1, 50)))
        names = f"max_session_length={LIMITS.max_session_length}"
    elif rule == "empty":
        payload[style] = draw(st.sampled_from([[], [[]], [["a"], []]]))
        names = "at least one"
    elif rule == "type":
        payload[style] = draw(st.one_of(json_values, st.lists(json_values, min_size=1)))
    elif rule == "field":
        payload[draw(st.text(min_size=1, max_size=8).filter(lambda key: key not in payload))] = 1
    else:  # JSON escapes can spell strings that UTF-8 cannot encode
        payload[style][0] = ["sku-1", draw(st.sampled_from(["\ud800", "a\udfff", "\udc00b"]))]
        return Case(json.dumps(payload).encode(), names="lone surrogate")
    return Case(encode(payload), names=names)


content_types = st.sampled_from(
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
        "application/jsonx",
        "json",
        "*/*",
        "",
    ]
) | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
junk_headers = st.sampled_from(
    [
        ("Content-Length", "-1"),
        ("Content-Length", "abc"),
        ("Content-Length", "²"),
        ("Content-Length", "1_0"),
        ("Transfer-Encoding", "chunked"),
        ("Expect", "100-continue"),
        ("X-Amzn-SageMaker-Custom-Attributes", "ë" * 50),
    ]
)


@st.composite
def pathological_bodies(draw: st.DrawFn) -> bytes:
    """Bodies that break JSON parsers rather than the schema: deep nesting, endless numbers."""
    n = draw(st.integers(1_000, LIMITS.max_body_bytes - 100))
    return draw(
        st.sampled_from(
            [
                b"[" * n,
                b'{"sessions": ' + b"[" * n + b'"a"' + b"]" * n + b"}",
                b'{"sessions": [["a"]], "k": ' + b"9" * n + b"}",
                b'{"sessions": [["a"]], "k": 1e' + str(n).encode() + b"}",
                b'{"sessions": [["a"]], "k": -0.' + b"0" * n + b"1}",
                '{"sessions": [["a"]]}'.encode("utf-16"),
                b'\xef\xbb\xbf{"sessions": [["a"]]}',
            ]
        )
    )


@st.composite
def cases(draw: st.DrawFn) -> Case:
    kind = draw(
        st.sampled_from(
            ["valid", "valid", "broken", "broken", "json", "bytes", "type", "big", "http", "route"]
            + ["deep"]
        )
    )
    if kind == "valid":
        return Case(encode(draw(valid_payloads())))
    if kind == "broken":
        return draw(broken_payloads())
    if kind == "json":
        return Case(encode(draw(json_values)))
    if kind == "deep":
        return Case(draw(pathological_bodies()))
    if kind == "bytes":
        return Case(draw(st.binary(max_size=200) | st.text(max_size=50).map(str.encode)))
    if kind == "type":
        return Case(encode(draw(valid_payloads())), content_type=draw(content_types))
    if kind == "big":
        size = LIMITS.max_body_bytes + draw(st.integers(1, 300_000))
        return Case(b" " * size, names=f"max_body_bytes={LIMITS.max_body_bytes}")
    if kind == "http":
        name, value = draw(junk_headers)
        return Case(encode(draw(valid_payloads())), extra_headers=((name, value),))
    method, path = draw(
        st.tuples(
            st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
            st.sampled_from(["/ping", "/invocations", "/openapi.json", "/", "/x?y=1", "//ping"]),
        )
    )
    return Case(draw(st.binary(max_size=20)), method=method, path=path)


# --- the fuzzing -------------------------------------------------------------------------------


def send_raw(server: Server, case: Case) -> tuple[int, dict[str, str], bytes]:
    """Headers that http.client would fix or refuse go over a socket of their own."""
    head = f"{case.method} {case.path} HTTP/1.1\r\nHost: x\r\nContent-Type: {case.content_type}\r\n"
    declared = dict(case.extra_headers)
    if "Content-Length" not in declared and "Transfer-Encoding" not in declared:
        declared["Content-Length"] = str(len(case.body))
    head += "".join(f"{name}: {value}\r\n" for name, value in declared.items()) + "\r\n"
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(head.encode("latin-1"))
        if declared.get("Expect") != "100-continue":
            sock.sendall(case.body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                head_part, _, rest = data.partition(b"\r\n\r\n")
                if head_part.startswith(b"HTTP/1.1 100"):
                    sock.sendall(case.body)
                    data = rest
                    continue
                length = int(dict(_header_lines(head_part)).get("Content-Length", "0"))
                if len(rest) >= length:
                    break
    assert data, f"no answer to {head!r}"
    head_part, _, body = data.partition(b"\r\n\r\n")
    server.tally["requests"] += 1
    status = int(head_part.split()[1])
    server.tally[f"{status // 100}xx"] += 1
    return status, dict(_header_lines(head_part)), body


def _header_lines(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    pairs = [line.split(": ", 1) for line in lines if ": " in line]
    return [(name.title(), value) for name, value in pairs]


def check(server: Server, case: Case, status: int, headers: dict[str, str], body: bytes) -> None:
    assert server.process.poll() is None, server.log.read_text()[-3000:]
    assert status < 500, (case, status, body[:500])
    if status >= 400 and case.method != "HEAD":
        assert headers.get("Content-Type") == JSON, (case, status)
        error = json.loads(body)
        ERROR.validate(error)
        assert case.names in error["error"], (case, error)
    if not case.is_plain_invocation:
        ok = case.method in {"GET", "HEAD"} or case.extra_headers  # HEAD: GET without a body
        assert status != 200 or ok, (case, status)
        return
    try:
        payload = json.loads(case.body.decode())  # as the server: UTF-8, no guessing, no BOM
    except (ValueError, RecursionError):
        assert status == 400, (case, status)
        return
    acceptable = REQUEST.is_valid(payload) and "surrogate" not in case.names
    assert (status == 200) == acceptable, (payload, status, body[:300])
    if status == 200:
        answer = json.loads(body)
        ANSWER.validate(answer)
        (style,) = payload.keys() - {"k"}
        (key,) = answer.keys() - {"unknown_skus"}
        assert key == {"sessions": "recommendations", "instances": "predictions"}[style]
        k = payload.get("k") or LIMITS.default_k
        assert [len(recs) for recs in answer[key]] == [
            min(k, server.vocabulary_size) for _ in payload[style]
        ]
        sessions = [s["skus"] if isinstance(s, dict) else s for s in payload[style]]
        known = {f"sku-{i}" for i in range(N_SKUS)}
        assert answer["unknown_skus"] == [sum(sku not in known for sku in s) for s in sessions]


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases())
def test_fuzz_the_running_server(server: Server, case: Case) -> None:
    raw = case.extra_headers or case.content_type != JSON or len(case.body) > 2_000
    if raw:
        answer = send_raw(server, case)
    else:
        headers = {"Content-Type": case.content_type}
        answer = server.send(case.method, case.path, case.body or None, headers)
    check(server, case, *answer)


def test_fuzzing_found_no_server_error(server: Server) -> None:
    """Runs after the fuzzing: enough requests, no 5xx, and no traceback in the server's log."""
    counts = dict(server.tally)
    print(f"fuzz requests by status class: {counts}")
    assert server.tally["requests"] >= 2_000, counts
    assert server.tally["schemathesis"] >= 100, counts  # it ran, and every call passed its checks
    assert server.tally["5xx"] == 0
    assert server.tally["2xx"] > 200 and server.tally["4xx"] > 1_000, counts
    log = server.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
