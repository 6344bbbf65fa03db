"""Deployment: locally (the same server and archive as on SageMaker) or to SageMaker.

`deploy_local` unpacks model.tar.gz as SageMaker does into /opt/ml/model, replaces the endpoint
it started before, starts the server as a detached process (it outlives the caller, so the demo
leaves a live endpoint), waits for /ping and sends one smoke request. `deploy_model` dispatches on
DEPLOY_TARGET and then records the deployed model as the *champion* (its run, metrics and archive)
where the next run's gate can read it. Releases are the files CI hands from training to deployment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import ProjectError
from .serving import server as serving
from .settings import Settings, get_settings

ENDPOINT_FILE = "endpoint.json"  # pid and url of the server we started
LOG_FILE = "server.log"
MODEL_SUBDIR = "model"

# Never send requests for our own endpoint through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class DeployError(ProjectError):
    """The local endpoint could not be deployed or reached; the message says what to do."""


@dataclass(frozen=True)
class LocalDeployment:
    """A running local endpoint and the result of its smoke request."""

    url: str
    pid: int
    model_dir: Path
    log_path: Path
    smoke_payload: dict[str, Any]
    smoke_answer: dict[str, Any]
    smoke_latency_ms: float


def smoke_request(
    url: str, sessions: Sequence[Sequence[str]], k: int = 20, timeout_s: float = 10.0
) -> dict[str, Any]:
    """POST `sessions` to `url`/invocations and return the decoded answer."""
    payload = json.dumps({"sessions": [list(s) for s in sessions], "k": k}).encode()
    request = urllib.request.Request(
        f"{url}/invocations",
        data=payload,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise DeployError(f"{url}/invocations answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise DeployError(
            f"cannot reach {url}/invocations ({exc}): is the endpoint running?"
        ) from None


def deploy_local(
    model_tar: Path,
    deploy_dir: Path,
    host: str | None = None,
    port: int | None = None,
    timeout_s: float = 120.0,
    smoke_sessions: Sequence[Sequence[str]] = (("smoke-test-sku",),),
    k: int = 10,
) -> LocalDeployment:
    """Serve `model_tar` from `deploy_dir` on host:port (default: settings) until `stop_local`."""
    host = host or get_settings().serving_host
    port = get_settings().serving_port if port is None else port
    deploy_dir = Path(deploy_dir)
    deploy_dir.mkdir(parents=True, exist_ok=True)
    if not Path(model_tar).is_file():
        raise DeployError(f"model archive {model_tar} not found: train and package a model first")
    stop_local(deploy_dir)
    model_dir = unpack_model(Path(model_tar), deploy_dir / MODEL_SUBDIR)
    _check_port_free(host, port)
    log_path = deploy_dir / LOG_FILE
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    pid = _spawn_server(model_dir, host, port, log_path)
    (deploy_dir / ENDPOINT_FILE).write_text(json.dumps({"pid": pid, "url": url}))
    try:
        _wait_until_healthy(url, pid, log_path, timeout_s)
        started = time.perf_counter()
        answer = smoke_request(url, smoke_sessions, k)
        latency_ms = (time.perf_counter() - started) * 1000
        if len(answer.get("recommendations", [])) != len(smoke_sessions):
            raise DeployError(f"smoke request got an answer of the wrong shape: {answer}")
    except DeployError:
        stop_local(deploy_dir)
        raise
    return LocalDeployment(
        url=url,
        pid=pid,
        model_dir=model_dir,
        log_path=log_path,
        smoke_payload={"sessions": [list(s) for s in smoke_sessions], "k": k},
        smoke_answer=answer,
        smoke_latency_ms=latency_ms,
    )


def stop_local(deploy_dir: Path, timeout_s: float = 30.0) -> bool:
    """Stop the endpoint `deploy_local` started in `deploy_dir`; False if none was running."""
    endpoint_file = Path(deploy_dir) / ENDPOINT_FILE
    try:
        pid = int(json.loads(endpoint_file.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    stopped = False
    # The pid may have been reused by an unrelated process since: only signal our server.
    if _alive(pid) and serving.__name__ in _command_line(pid):
        os.kill(pid, signal.SIGTERM)  # the server drains in-flight requests, then exits
        if not _wait_for_exit(pid, timeout_s):
            os.kill(pid, signal.SIGKILL)
            _wait_for_exit(pid, 5.0)
        stopped = True
    endpoint_file.unlink(missing_ok=True)
    return stopped


def unpack_model(model_tar: Path, model_dir: Path) -> Path:
    """Replace `model_dir` with the archive's contents (unsafe members such as ../ are refused)."""
    staging = model_dir.with_name(model_dir.name + ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(model_tar) as archive:
            archive.extractall(staging, filter="data")
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DeployError(
            f"cannot unpack {model_tar} ({exc}): package the exported model again"
        ) from None
    shutil.rmtree(model_dir, ignore_errors=True)
    staging.rename(model_dir)
    return model_dir


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise DeployError(
                f"port {port} on {host} is not available ({exc.strerror}): stop what uses it "
                "or set SERVING_PORT (serving_port) to a free port"
            ) from None


def _spawn_server(model_dir: Path, host: str, port: int, log_path: Path) -> int:
    """Start the server in its own session (Ctrl-C in the caller's terminal leaves it running)."""
    package_root = str(Path(__file__).resolve().parents[1])  # import the same code as the caller
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [*serving.command(model_dir, host, port), "--log-requests"]
    with open(log_path, "wb") as log:
        # posix_spawn, not Popen: nothing here waits for this process; `_alive` reaps it.
        return os.posix_spawn(
            sys.executable,
            command,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
            ],
            setsid=True,
        )


def _wait_until_healthy(url: str, pid: int, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if not _alive(pid):
            raise DeployError(
                f"the server exited before it was ready; its log ({log_path}):\n{_tail(log_path)}"
            )
        status, body = _ping(url)
        if status == 200:
            return
        if body.get("state") == "failed":
            raise DeployError(f"the server cannot load the model: {body.get('error')}")
        if time.monotonic() > deadline:
            raise DeployError(
                f"{url}/ping was not healthy within timeout_s={timeout_s} (last: {status} "
                f"{body.get('error', '')}); the server log ({log_path}):\n{_tail(log_path)}"
            )
        time.sleep(0.2)


def _ping(url: str) -> tuple[int | None, dict[str, Any]]:
    """Status and JSON body of GET /ping; (None, {}) while the port does not answer yet."""
    try:
        with _OPENER.open(f"{url}/ping", timeout=2.0) as response:
            return response.status, {}
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {}
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return None, {}


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0]:  # our own child that exited: reap it
            return False
    except ChildProcessError:
        pass  # started by another process (e.g. an earlier flow step)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _command_line(pid: int) -> str:
    """The process's command line ('' if unknown): /proc on Linux, ps elsewhere."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        pass
    try:
        result = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
        )
    except OSError:
        return ""
    return result.stdout


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- deployment to the configured target, the champion record, releases -----------------------

CHAMPION_FILE = "champion.json"
ARCHIVE_FILE = "model.tar.gz"
DEFAULT_SMOKE_SESSIONS: tuple[tuple[str, ...], ...] = (("smoke-test-sku",),)


class DeployRefused(DeployError):
    """A release whose gate did not pass (or that is incomplete) is never deployed."""


class ChampionUnavailable(DeployError):
    """The champion record's store (local folder or S3) cannot be read or written."""


def candidate_metrics(evaluation: Any, candidate: str) -> dict[str, float]:
    """The candidate's metrics from an `EvaluationReport` or its JSON form ({} if absent)."""
    data = evaluation.to_dict() if hasattr(evaluation, "to_dict") else evaluation
    try:
        return dict(data["models"][candidate]["metrics"])
    except (KeyError, TypeError):
        return {}


def deploy_model(
    model_archive: bytes,
    smoke_sessions: Sequence[Sequence[str]],
    settings: Settings | None = None,
    *,
    run_id: str | None = None,
    flow: str | None = None,
    candidate: str = "lstm",
    metrics: Mapping[str, float] | None = None,
    deploy_dir: Path | None = None,
) -> dict[str, Any]:
    """Deploy to DEPLOY_TARGET (local or sagemaker), then record the model as the champion.

    Returns plain data for the flow artifact, the card and the CLI: where it runs, the smoke
    request and answer, and the champion record. Raises `DeployError` (or the SageMaker module's
    errors, after its rollback) when the deployment or its smoke request fails.
    """
    settings = settings or get_settings()
    if settings.deploy_target == "sagemaker":
        record = _sagemaker().deploy(
            model_archive, settings, smoke_sessions, poll_s=settings.sagemaker_poll_s
        )
        endpoint, config = record["endpoint_name"], record["endpoint_config_name"]
        outcome: dict[str, Any] = {
            "reason": f"Deployed to SageMaker endpoint {endpoint} (config {config}).",
            **record,
        }
    else:
        deploy_dir = deploy_dir or settings.data_dir / "deploy"
        deploy_dir.mkdir(parents=True, exist_ok=True)
        model_tar = deploy_dir / ARCHIVE_FILE
        model_tar.write_bytes(model_archive)
        local = deploy_local(
            model_tar,
            deploy_dir,
            settings.serving_host,
            settings.serving_port,
            smoke_sessions=smoke_sessions,
        )
        endpoint = local.url
        outcome = {
            "reason": f"Deployed locally at {local.url} (stop it with `make stop`).",
            "url": local.url,
            "pid": local.pid,
            "log_path": str(local.log_path),
            "smoke_payload": local.smoke_payload,
            "smoke_answer": local.smoke_answer,
            "smoke_latency_ms": local.smoke_latency_ms,
        }
    champion = {
        "run_id": run_id,
        "flow": flow,
        "candidate": candidate,
        "metrics": dict(metrics or {}),
        "model_uri": outcome.get("model_uri"),  # local: set to the kept copy when written
        "deployed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "target": settings.deploy_target,
        "endpoint": endpoint,
        "smoke_latency_ms": outcome["smoke_latency_ms"],
    }
    champion = write_champion(settings, champion, model_archive)
    target = settings.deploy_target
    return {
        "deployed": True,
        "target": target,
        "endpoint": endpoint,
        **outcome,
        "champion": champion,
    }


def deploy_if_passed(
    decision: Any,
    model_archive: bytes,
    smoke_sessions: Sequence[Sequence[str]],
    enabled: bool = True,
    deploy_dir: Path | None = None,
    *,
    evaluation: Any = None,
    run_id: str | None = None,
    flow: str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Deploy the model to DEPLOY_TARGET only if the gate passed it (and deployment is enabled).

    Returns plain data for the flow artifact and card: whether it deployed, why, and the smoke
    request and answer. A model that failed its gate is never started.
    """
    if not decision.passed:
        return {"deployed": False, "reason": "Not deployed: the model failed the gate."}
    if not enabled:
        return {"deployed": False, "reason": "Not deployed: deployment is off (deploy_enabled)."}
    return deploy_model(
        model_archive,
        smoke_sessions,
        settings,
        run_id=run_id,
        flow=flow,
        candidate=decision.candidate,
        metrics=candidate_metrics(evaluation, decision.candidate),
        deploy_dir=deploy_dir,
    )


def smoke_endpoint(
    settings: Settings | None = None,
    sessions: Sequence[Sequence[str]] = DEFAULT_SMOKE_SESSIONS,
    k: int = 10,
) -> tuple[str, dict[str, Any]]:
    """One request to the deployed endpoint of DEPLOY_TARGET: (endpoint, answer)."""
    settings = settings or get_settings()
    if settings.deploy_target == "sagemaker":
        sagemaker = _sagemaker()
        endpoint = settings.sagemaker_endpoint
        payload = {"sessions": [list(s) for s in sessions], "k": k}
        runtime = sagemaker.Clients.from_session().runtime
        return endpoint, sagemaker.smoke_test(runtime, endpoint, payload)[0]
    try:
        record = json.loads((settings.data_dir / "deploy" / ENDPOINT_FILE).read_text())
    except (OSError, ValueError):
        raise DeployError(
            "No local endpoint is running (no data/deploy/endpoint.json): deploy one first "
            "(make run, or make release && make deploy)."
        ) from None
    return record["url"], smoke_request(record["url"], sessions, k)


def _sagemaker() -> Any:
    """The SageMaker deployer, which projects baked with deployment=none do not have."""
    try:
        from . import sagemaker
    except ModuleNotFoundError as error:
        if error.name == f"{__package__}.sagemaker":
            raise DeployError(
                "DEPLOY_TARGET=sagemaker needs a project baked with deployment=sagemaker, and "
                "this one was baked without it: set DEPLOY_TARGET=local, or bake it again."
            ) from None
        raise
    return sagemaker


# --- the champion record: what is deployed now, for the gate of the next run ----------------


def write_champion(
    settings: Settings, record: Mapping[str, Any], model_archive: bytes
) -> dict[str, Any]:
    """Keep the deployed archive and its record where later runs (and CI jobs) find them.

    Local: DATA_DIR/deployments/; sagemaker: s3://MODEL_BUCKET/MODEL_PREFIX/champion/. The
    archive goes first, so a record never points at an archive that is not there yet.
    """
    record = dict(record)
    if settings.deploy_target == "sagemaker":
        bucket, prefix = _champion_s3(settings)
        s3 = _s3_client()
        with _champion_store(f"writing the champion record to s3://{bucket}/{prefix}"):
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{ARCHIVE_FILE}", Body=model_archive)
            s3.put_object(
                Bucket=bucket,
                Key=f"{prefix}/{CHAMPION_FILE}",
                Body=json.dumps(record, indent=1).encode(),
                ContentType="application/json",
            )
        return record
    folder = _champion_dir(settings)
    with _champion_store(f"writing the champion record to {folder}"):
        folder.mkdir(parents=True, exist_ok=True)
        archive = folder / ARCHIVE_FILE
        _write_atomic(archive, model_archive)
        record["model_uri"] = record.get("model_uri") or str(archive.resolve())
        _write_atomic(folder / CHAMPION_FILE, json.dumps(record, indent=1).encode())
    return record


def read_champion(settings: Settings | None = None) -> dict[str, Any] | None:
    """The record of the model deployed now, or None if nothing was deployed yet.

    Raises `ChampionUnavailable` when the store cannot be read (no bucket, no credentials, a
    corrupt record): a gate must not mistake "cannot tell" for "no champion".
    """
    data = _read_champion_file(settings or get_settings(), CHAMPION_FILE)
    if data is None:
        return None
    try:
        record = json.loads(data)
    except ValueError as error:
        raise ChampionUnavailable(
            f"the champion record is not JSON ({error}): deploy a model again to rewrite it"
        ) from None
    if not isinstance(record, dict):
        raise ChampionUnavailable("the champion record is not a JSON object: deploy again")
    return record


def load_champion_archive(settings: Settings | None = None) -> bytes | None:
    """The deployed model.tar.gz kept with the champion record, or None if there is none."""
    return _read_champion_file(settings or get_settings(), ARCHIVE_FILE)


def _read_champion_file(settings: Settings, name: str) -> bytes | None:
    if settings.deploy_target == "sagemaker":
        bucket, prefix = _champion_s3(settings)
        from botocore.exceptions import ClientError

        with _champion_store(f"reading s3://{bucket}/{prefix}/{name}"):
            try:
                return _s3_client().get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"].read()
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
    path = _champion_dir(settings) / name
    with _champion_store(f"reading {path}"):
        return path.read_bytes() if path.is_file() else None


def _champion_dir(settings: Settings) -> Path:
    return settings.data_dir / "deployments"


def _champion_s3(settings: Settings) -> tuple[str, str]:
    if not settings.model_bucket:
        raise ChampionUnavailable(
            "DEPLOY_TARGET=sagemaker keeps the champion record in S3: set MODEL_BUCKET."
        )
    return settings.model_bucket, f"{settings.model_prefix.strip('/')}/champion"


def _s3_client() -> Any:
    import boto3

    return boto3.client("s3")


@contextmanager
def _champion_store(doing: str) -> Iterator[None]:
    """Storage and AWS errors while `doing` become one-line `ChampionUnavailable` errors."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as error:
        details = error.response.get("Error", {})
        raise ChampionUnavailable(
            f"AWS refused {doing}: {details.get('Code')}: {details.get('Message')} (does "
            "MODEL_BUCKET exist, and may these credentials use it?)"
        ) from None
    except (BotoCoreError, OSError) as error:
        raise ChampionUnavailable(f"failed {doing}: {error}") from None


def _write_atomic(path: Path, data: bytes) -> None:
    staging = path.with_name(path.name + ".partial")
    staging.write_bytes(data)
    staging.replace(path)


# --- releases: what CI hands from the training job to the deploy job ---------------------------

RELEASE_FILES = (ARCHIVE_FILE, "gate.json", "evaluation.json", "smoke.json", "run.json")


@dataclass(frozen=True)
class Release:
    """A trained model with everything needed to decide on and check its deployment."""

    archive: bytes
    decision: Any  # gate.GateDecision
    evaluation: dict[str, Any]
    smoke_sessions: list[list[str]]
    flow: str
    run_id: str


def write_release(release: Release, out_dir: Path) -> list[Path]:
    """Write the release's files (RELEASE_FILES) into `out_dir`; return their paths."""
    from .gate import decision_to_dict

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    contents = {
        ARCHIVE_FILE: release.archive,
        "gate.json": decision_to_dict(release.decision),
        "evaluation.json": release.evaluation,
        "smoke.json": {"sessions": release.smoke_sessions},
        "run.json": {"flow": release.flow, "run_id": release.run_id},
    }
    for name, content in contents.items():
        data = content if isinstance(content, bytes) else json.dumps(content, indent=1).encode()
        (out_dir / name).write_bytes(data)
    return [out_dir / name for name in RELEASE_FILES]


def read_release(release_dir: Path) -> Release:
    """Read what `write_release` wrote; a missing or broken file is a `DeployRefused`."""
    from .gate import GateError, decision_from_dict

    release_dir = Path(release_dir)
    missing = [name for name in RELEASE_FILES if not (release_dir / name).is_file()]
    if missing:
        raise DeployRefused(
            f"release {release_dir} lacks {', '.join(missing)}: write it with `make release`."
        )
    try:
        parsed = {name: json.loads((release_dir / name).read_text()) for name in RELEASE_FILES[1:]}
        return Release(
            archive=(release_dir / ARCHIVE_FILE).read_bytes(),
            decision=decision_from_dict(parsed["gate.json"]),
            evaluation=parsed["evaluation.json"],
            smoke_sessions=[list(map(str, s)) for s in parsed["smoke.json"]["sessions"]],
            flow=str(parsed["run.json"]["flow"]),
            run_id=str(parsed["run.json"]["run_id"]),
        )
    except (ValueError, KeyError, TypeError, GateError) as error:
        raise DeployRefused(
            f"release {release_dir} is unreadable ({error}): write it again with `make release`."
        ) from None


def deploy_release(release_dir: Path, settings: Settings | None = None) -> dict[str, Any]:
    """Deploy a release to DEPLOY_TARGET, refusing one whose gate did not pass."""
    from .gate import format_decision

    release = read_release(release_dir)
    if not release.decision.passed:
        raise DeployRefused(
            f"run {release.run_id} failed its gate, so it is not deployed.\n"
            + format_decision(release.decision)
        )
    return deploy_model(
        release.archive,
        release.smoke_sessions or DEFAULT_SMOKE_SESSIONS,
        settings,
        run_id=release.run_id,
        flow=release.flow,
        candidate=release.decision.candidate,
        metrics=candidate_metrics(release.evaluation, release.decision.candidate),
    )
