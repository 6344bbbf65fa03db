"""Releases: the files CI hands from the training job to the deploy job, and `release` writing
them from a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import flip_to_passed, make_release, reseal

from {{ cookiecutter.project }} import cli
from {{ cookiecutter.project }}.evaluation.report import EvaluationReport, ModelResult
from {{ cookiecutter.project }}.release.bundle import (
    RELEASE_FILES,
    DeployRefused,
    candidate_metrics,
    check_decision,
    read_release,
    write_release,
)
from {{ cookiecutter.project }}.release.gate import ChampionStatus, GateThresholds

FIRST = ChampionStatus("none", "no champion deployed yet")


def test_a_release_reads_back_what_was_written(tmp_path: Path) -> None:
    release = make_release(b"archive", passed=True)
    paths = write_release(release, tmp_path / "release")
    assert sorted(p.name for p in paths) == sorted(RELEASE_FILES)
    assert read_release(tmp_path / "release") == release


def test_a_broken_release_is_refused(tmp_path: Path) -> None:
    write_release(make_release(b"archive", passed=True), tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"flow": "RecsFlow"}))
    with pytest.raises(DeployRefused, match="sha256 of run.json is not the one in manifest.json"):
        read_release(tmp_path)
    reseal(tmp_path)
    with pytest.raises(DeployRefused, match="unreadable.*make release"):
        read_release(tmp_path)
    (tmp_path / "model.tar.gz").unlink()
    with pytest.raises(DeployRefused, match="lacks model.tar.gz"):
        read_release(tmp_path)


def test_a_swapped_archive_is_refused(tmp_path: Path) -> None:
    write_release(make_release(b"the gated archive", passed=True), tmp_path)
    (tmp_path / "model.tar.gz").write_bytes(b"another model")
    with pytest.raises(DeployRefused, match="sha256 of model.tar.gz is not the one in manifest"):
        read_release(tmp_path)


def test_a_failed_gate_edited_into_a_pass_is_decided_again_and_refused(tmp_path: Path) -> None:
    write_release(make_release(b"archive", passed=False), tmp_path)
    flip_to_passed(tmp_path)
    release = read_release(tmp_path)
    assert release.decision.passed  # the stored decision now says so ...
    with pytest.raises(DeployRefused) as refused:  # ... the decision made again does not
        check_decision(release, GateThresholds(), FIRST)
    message = str(refused.value)
    assert message.startswith("run 12 failed its gate (decided again from its evaluation.json")
    assert "its gate.json differs in passed, check mrr@20, check lift_over_best_baseline" in message
    assert "[FAIL] mrr@20: mrr@20 0.0100 < minimum" in message


def test_a_decision_is_refused_when_thresholds_or_champion_changed(tmp_path: Path) -> None:
    release = make_release(b"archive", passed=True)
    assert check_decision(release, GateThresholds(), FIRST) == release.decision
    with pytest.raises(DeployRefused, match=r"gate.json differs .*\(check mrr@20\): it was edit"):
        check_decision(release, GateThresholds(min_mrr_at_20=0.1), FIRST)
    with pytest.raises(DeployRefused, match="failed its gate.*differs in passed"):
        check_decision(release, GateThresholds(min_mrr_at_20=0.3), FIRST)
    deployed_since = ChampionStatus("deployed", "", {"run_id": "13", "sha256": "ab"})
    with pytest.raises(DeployRefused, match=r"(?s)differs in passed, champion.*not re-scored"):
        check_decision(release, GateThresholds(), deployed_since)


def test_candidate_metrics_from_a_report_or_its_json_form(tmp_path: Path) -> None:
    result = ModelResult("lstm", {"mrr@20": 0.3}, {}, tmp_path / "lstm", 0.1)
    report = EvaluationReport(20, 4, 5, {"lstm": result}, tmp_path / "report.json")
    assert candidate_metrics(report, "lstm") == {"mrr@20": 0.3}
    assert candidate_metrics(report.to_dict(), "lstm") == {"mrr@20": 0.3}
    assert candidate_metrics(report, "gru") == {} and candidate_metrics(None, "lstm") == {}


STAND_IN_FLOW = '''
"""A RecsFlow with just the artifacts `release` reads: the command runs on a real Metaflow run."""
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from metaflow import FlowSpec, step

from {{ cookiecutter.project }}.evaluation.report import EvaluationReport, ModelResult
from {{ cookiecutter.project }}.release.gate import GateCheck, GateDecision


class RecsFlow(FlowSpec):
    @step
    def start(self):
        self.split = SimpleNamespace(test=pd.DataFrame({"skus": [["a", "b"], ["c"], ["d"], ["e"]]}))
        self.training = SimpleNamespace(model_archive=b"the archive")
        metrics = {"mrr@20": 0.3}
        result = ModelResult("lstm", metrics, {}, Path("report.json"), 0.1)
        self.evaluation = EvaluationReport(20, 4, 5, {"lstm": result}, Path("."))
        check = GateCheck("mrr@20", 0.3, 0.05, True, "ok")
        self.gate_decision = GateDecision("lstm", True, (check,))
        self.next(self.dataset)

    @step
    def dataset(self):
        self.next(self.train)

    @step
    def train(self):
        self.next(self.evaluate)

    @step
    def evaluate(self):
        self.next(self.gate)

    @step
    def gate(self):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    RecsFlow()
'''


def test_release_packs_the_latest_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "flow.py").write_text(STAND_IN_FLOW)
    env = {**os.environ, "METAFLOW_USER": "tester"}
    ran = subprocess.run(
        [sys.executable, "flow.py", "--no-pylint", "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    monkeypatch.chdir(tmp_path)  # Metaflow's local runs live in ./.metaflow
    monkeypatch.setenv("METAFLOW_USER", "tester")

    assert cli.main(["release", "--out", "release"]) == 0
    release = read_release(tmp_path / "release")
    assert "(gate passed)" in capsys.readouterr().out
    assert release.archive == b"the archive" and release.decision.passed
    assert release.smoke_sessions == [["a", "b"], ["c"], ["d"]]
    assert release.evaluation["models"]["lstm"]["metrics"] == {"mrr@20": 0.3}
    assert (release.flow, release.run_id.isdigit()) == ("RecsFlow", True)
