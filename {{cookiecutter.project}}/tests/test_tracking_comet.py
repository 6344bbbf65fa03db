"""Comet tracking (this file is removed with tracking/comet.py from projects baked without it)."""

from __future__ import annotations

import socket
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from {{ cookiecutter.project }}.schema import MRR, PROTOCOL_METRICS, SESSION_CUT, K

# tracking.comet sets Comet's environment before comet_ml loads: import it before comet_ml.
from {{ cookiecutter.project }}.tracking import comet, start_tracking


def test_comet_with_a_key_is_online() -> None:
    import comet_ml

    online, options = comet.experiment_spec("secret-key", "proj", Path("unused"))
    assert online is comet_ml.Experiment
    assert options["api_key"] == "secret-key" and "offline_directory" not in options
    offline, options = comet.experiment_spec(None, "proj", Path("here"))
    assert offline is comet_ml.OfflineExperiment and options["offline_directory"] == "here"


def test_comet_without_a_key_writes_an_offline_archive_and_calls_nobody(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    connections: list[tuple[str, tuple[Any, ...]]] = []
    watching = True

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if watching and event in ("socket.connect", "socket.getaddrinfo"):
            connections.append((event, args))

    sys.addaudithook(audit)  # audit hooks cannot be removed: `watching` limits it to this test
    try:
        tracker = start_tracking("comet", None, "{{ cookiecutter.project | replace('_', '-') }}", tmp_path / "comet", "run-1")
        tracker.log_parameters({"lstm_units": 64})
        tracker.log_metrics({"loss": 1.5}, step=1)
        figure = Figure()
        figure.add_subplot().plot([1, 2, 3])
        tracker.log_figure("curve", figure)
        location = tracker.end()
    finally:
        watching = False
    assert connections == []
    assert location is not None
    archive = Path(location)
    assert archive.parent == tmp_path / "comet" and archive.suffix == ".zip"
    with zipfile.ZipFile(archive) as zipped:
        assert zipped.namelist()  # what `comet upload` sends later


def test_the_final_evaluation_goes_to_an_offline_experiment(tmp_path: Path) -> None:
    from {{ cookiecutter.project }}.evaluation import metrics
    from {{ cookiecutter.project }}.evaluation.report import evaluate, log_report
    from {{ cookiecutter.project }}.modeling import baselines
    from {{ cookiecutter.project }}.pipeline.plots import plot_comparison

    train = [["a", "b", "c"], ["a", "b"], ["b", "c"], ["c", "a"]]
    examples = metrics.next_item_examples([["a", "b", "c"]], max_examples=10, seed=0)
    session_cuts = metrics.session_cut_examples([["a", "b", "c"]], seed=0)
    models = baselines.fit_baselines(train)
    report = evaluate(
        models, examples, train, k=K, session_cuts=session_cuts, out_dir=tmp_path / "reclist"
    )
    tracker = start_tracking("comet", None, "{{ cookiecutter.project | replace('_', '-') }}", tmp_path / "comet", "run-1-eval")
    archive = Path(log_report(tracker, report, plot_comparison(report)))
    with zipfile.ZipFile(archive) as zipped:
        logged = "".join(zipped.read(name).decode(errors="ignore") for name in zipped.namelist())
    assert f"markov/{MRR}" in logged
    assert f"markov/{PROTOCOL_METRICS[SESSION_CUT][0]}" in logged  # the data challenge's protocol


def test_comet_with_a_key_goes_online_and_keeps_the_run_if_comet_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """COMET_API_KEY set: the online Experiment is created first. Comet's server here is a local
    port nothing listens on (refused at once, no retries), so the run falls back to an archive."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    for name, value in {
        "COMET_URL_OVERRIDE": f"http://127.0.0.1:{port}/clientlib/",
        "COMET_TIMEOUT_HTTP": "2",
        "COMET_HTTP_SESSION_RETRY_TOTAL": "0",
        "COMET_GET_OR_ADD_EXPERIMENT_RETRY_TOTAL": "0",
    }.items():
        monkeypatch.setenv(name, value)
    hosts: list[Any] = []
    watching = True

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if watching and event == "socket.connect":
            hosts.append(args[1][0] if isinstance(args[1], tuple) else args[1])

    sys.addaudithook(audit)
    started = time.monotonic()
    try:
        tracker = start_tracking("comet", "0123456789abcdef01234567", "proj", tmp_path, "run-1")
        tracker.log_metrics({"loss": 1.0}, step=1)
        location = tracker.end()
    finally:
        watching = False
    assert time.monotonic() - started < 20
    assert hosts and set(hosts) == {"127.0.0.1"}  # it tried Comet (here: local) and nothing else
    assert "Comet is unreachable: run 'run-1' goes to an offline archive" in capsys.readouterr().err
    assert location is not None and Path(location).parent == tmp_path
    assert zipfile.is_zipfile(location)


def test_comets_chatter_goes_to_a_log_file_not_the_console(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    tracker = start_tracking("comet", None, "{{ cookiecutter.project | replace('_', '-') }}", tmp_path / "comet", "run-1")
    tracker.log_metrics({"loss": 1.5}, step=1)
    tracker.end()
    out, err = capfd.readouterr()
    assert "COMET INFO" not in out + err
    assert "COMET INFO" in (tmp_path / "comet" / comet.CHATTER_LOG).read_text()
