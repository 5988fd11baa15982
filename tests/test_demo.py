"""The main job: `nmflowgan demo` runs every stage, writes a report of measured numbers, and continues."""

import json
import re

import pytest

from nmflowgan.cli import main
from nmflowgan.training.checkpoint import read_checkpoint_meta


@pytest.mark.slow
def test_demo_runs_end_to_end_and_continues(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--budget-minutes", "0.5", "--quiet"]) == 0
    report = (out / "report.md").read_text()
    for model in ("gaussian", "nlf", "flow-only", "nmflowgan", "oracle", "decorrelated oracle"):
        assert re.search(rf"\| {model} \| \d+\.\d{{4}} \|", report), model
    # the real noise's, from the test images' further captures: once, under the best checkpoint's table
    assert report.count("Correlation charge: +0.0") == 1
    for source in ("real", "nmflowgan", "flow-only", "nlf", "gaussian"):
        assert re.search(rf"\| {source} \| \d+\.\d\d \| 0\.\d{{4}} \|", report), source
    assert "examples.png" in report and (out / "examples.png").is_file()
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 6
    results = json.loads((out / "evaluation" / "results.json").read_text())
    assert results["models"]["oracle"]["kld"] < results["models"]["gaussian"]["kld"]
    # Training lengths were sized from this machine's measured speed, within each stage's share of the budget.
    plan = json.loads((out / "plan.json").read_text())
    noise = plan["noise model"]
    assert noise["steps_per_s"] > 0 and noise["steps"] <= noise["wanted"]
    assert noise["validation_s"] > 0 and noise["validations"] == 11
    assert noise["steps"] <= max(20, int((noise["share_s"] - 11 * noise["validation_s"]) * noise["steps_per_s"]))
    assert read_checkpoint_meta((out / "noise-model" / "last").resolve())["step"] == noise["steps"]
    assert "sized to the budget on this machine: noise model" in report
    assert not list(out.glob("calibration*"))  # scratch runs are removed
    timings = json.loads((out / "timings.json").read_text())
    # A second run finds every stage done and only rewrites the report.
    assert main(["demo", "--out", str(out), "--budget-minutes", "0.5", "--quiet"]) == 0
    assert json.loads((out / "timings.json").read_text()) == timings
    assert "demo finished" in capsys.readouterr().out


def test_a_demo_stopped_while_timing_its_steps_decides_nothing(tmp_path):
    from nmflowgan.demo import demo
    from nmflowgan.training.run import StopRequest

    stop = StopRequest()
    stop.request("SIGINT")  # as if Ctrl-C came during the first timed steps
    assert demo(tmp_path / "demo", budget_minutes=0.5, progress=False, stop=stop) is None
    assert not (tmp_path / "demo" / "plan.json").exists() and not (tmp_path / "demo" / "noise-model").exists()
    assert not list((tmp_path / "demo").glob("calibration*"))


def test_a_stage_gets_no_more_than_the_time_the_stages_before_it_left(tmp_path):
    from nmflowgan.demo import SCORING_S, SETUP_S, SHARES, DemoRun
    from nmflowgan.training.run import StopRequest

    def plan(timings: dict, speed: float = 10.0) -> dict:
        run = DemoRun(tmp_path / str(len(list(tmp_path.iterdir()))), 20, 0, False, StopRequest())
        run.timings = dict(timings)
        run.sized("denoiser", 10, 5, lambda: (speed, 0.5), runs=5)
        return run.plan["denoiser"]

    on_time = plan({"simulate": 20.0, "train noise model": 396.0})
    assert on_time["share_s"] == pytest.approx(SHARES["denoiser"] * 1200) and on_time["steps"] == 800
    late = plan({"simulate": 40.0, "train noise model": 396.0, "evaluate": 404.0})  # 840 s spent, 300 s left
    assert late["share_s"] == pytest.approx((1200 - SETUP_S - 840) / 5 - SCORING_S)
    assert late["steps"] == int((late["share_s"] - 5 * 0.5) * 10.0)
    assert plan({"evaluate": 5000.0})["steps"] == 10  # nothing left: the floor
