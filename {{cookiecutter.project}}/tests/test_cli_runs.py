"""`runs`, `summary`, `gate` and the run they pick, on real Metaflow runs of a small stand-in flow:
one that finished, then one that failed at its quality step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from {{ cookiecutter.project }} import cli

STAND_IN_FLOW = '''
"""A RecsFlow with the artifacts `runs`, `summary` and `gate` read; FAIL_AT=<step> fails a step."""
import os
from pathlib import Path
from types import SimpleNamespace

from metaflow import FlowSpec, card, current, step
from metaflow.cards import Markdown

from {{ cookiecutter.project }}.evaluation.report import EvaluationReport, ModelResult
from {{ cookiecutter.project }}.release.gate import GateCheck, GateDecision


def _fail(name):
    if os.environ.get("FAIL_AT") == name:
        raise RuntimeError(f"failed on purpose at {name}")


class RecsFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.quality)

    @step
    def quality(self):
        _fail("quality")
        self.quality_report = SimpleNamespace(row_count=3000)
        self.next(self.choose)

    @step
    def choose(self):
        self.best = SimpleNamespace(label="lstm_units=32")
        self.next(self.evaluate)

    @step
    def evaluate(self):
        models = {
            name: ModelResult(name, {"mrr@20": mrr, "hit_rate@20": 0.5}, {}, Path("r"), 0.1)
            for name, mrr in (("lstm", 0.3), ("markov", 0.25))
        }
        self.evaluation = EvaluationReport(20, 4, 5, models, Path("."))
        self.next(self.gate)

    @card(type="blank")
    @step
    def gate(self):
        current.card.append(Markdown("# Gate"))
        check = GateCheck("lift_over_best_baseline", 0.2, 0.05, True, "lift +20.0%")
        self.gate_decision = GateDecision("lstm", True, (check,))
        self.next(self.deploy)

    @step
    def deploy(self):
        self.deployment = {"deployed": False, "reason": "Not deployed: deployment is off."}
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    RecsFlow()
'''


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(folder, id of the finished run, id of the newer failed run)."""
    work = tmp_path_factory.mktemp("runs")
    (work / "flow.py").write_text(STAND_IN_FLOW)
    ids = []
    for fail_at in ("", "quality"):
        env = {**os.environ, "METAFLOW_USER": "tester", "FAIL_AT": fail_at}
        ran = subprocess.run(
            [sys.executable, "flow.py", "--no-pylint", "run", "--run-id-file", "run-id"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert (ran.returncode == 0) == (not fail_at), ran.stderr[-3000:]
        ids.append((work / "run-id").read_text().strip())
    return work, ids[0], ids[1]


@pytest.fixture
def in_runs(two_runs, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    from metaflow.plugins.datastores.local_storage import LocalStorage

    work, finished, failed = two_runs
    monkeypatch.chdir(work)  # Metaflow's local runs live in ./.metaflow
    # The client caches the first .metaflow it finds in a process: find this one, forget it after.
    monkeypatch.setattr(LocalStorage, "datastore_root", None)
    monkeypatch.setenv("METAFLOW_USER", "tester")
    monkeypatch.setenv("DATA_DIR", str(work / "data"))
    return finished, failed


def test_runs_lists_both_runs_newest_first(in_runs, capsys: pytest.CaptureFixture[str]) -> None:
    finished, failed = in_runs
    assert cli.main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["run", "started", "status", "failed"]
    failed_line, finished_line = lines[1].split(), lines[2].split()
    assert failed_line[0] == failed and "failed" in failed_line and "quality" in failed_line
    assert finished_line[0] == finished
    for value in ("finished", "3,000", "lstm_units=32", "0.3000", "0.5000", "+20.0%", "PASSED"):
        assert value in finished_line
    assert finished_line[-1] == "no"  # not deployed
    assert ":" in finished_line[2] and "." not in finished_line[2]  # no microseconds


def test_gate_reads_the_latest_finished_run_not_the_newer_failed_one(
    in_runs, capsys: pytest.CaptureFixture[str]
) -> None:
    finished, failed = in_runs
    assert cli.main(["gate"]) == 0
    assert f"Run {finished}:" in capsys.readouterr().out
    assert cli.main(["gate", "--run", failed]) == cli.GATE_UNDECIDED
    assert "has no gate decision" in capsys.readouterr().err


def test_summary_names_the_failed_step_and_the_resume_command(
    in_runs, capsys: pytest.CaptureFixture[str]
) -> None:
    finished, failed = in_runs
    assert cli.main(["summary"]) == 0
    out = capsys.readouterr().out
    resume = f'make resume ARGS="--origin-run-id {failed}"'
    assert f"latest run {failed} failed at step quality" in out and resume in out
    assert f"Run RecsFlow/{finished}: finished" in out  # then the latest finished run
    assert cli.main(["summary", "--run", failed]) == 0
    out = capsys.readouterr().out
    assert "failed at step quality" in out and "finished" not in out


def test_a_wrong_option_is_an_error_not_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["runs", "--run", "12"])
    assert "unrecognized arguments: --run" in capsys.readouterr().err


def test_runs_table_shows_missing_values_as_dashes() -> None:
    table = cli.runs_table([{"run": "7", "lift": None, "MRR@20": 0.25}])
    assert table.splitlines()[1].split() == ["7", "-", "0.2500"]


def test_run_newest_picks_the_newest_run_even_unfinished(
    in_runs, capsys: pytest.CaptureFixture[str]
) -> None:
    _, failed = in_runs
    assert cli.main(["summary", "--run", "newest", "--markdown"]) == 0
    assert f"RecsFlow/{failed} (did not finish)" in capsys.readouterr().out


def test_a_brief_summary_gives_the_gate_verdict_without_its_checks(
    in_runs, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["summary", "--brief"]) == 0
    out = capsys.readouterr().out
    assert "Gate:     PASSED" in out and "lift +20.0%" not in out


def test_report_links_the_cards_and_plots_the_runs(
    in_runs, two_runs, capsys: pytest.CaptureFixture[str]
) -> None:
    work, finished, failed = two_runs
    assert cli.main(["report"]) == 0
    index = work / "data" / "cards" / finished / "index.html"
    assert f"{index}: 1 card(s) of run {finished}, 1 run(s) plotted" in capsys.readouterr().out
    page = index.read_text()
    assert '<a href="gate.html">' in page and (index.parent / "gate.html").is_file()
    assert "data:image/png;base64," in page
    assert finished in page and failed in page  # the runs table lists both
