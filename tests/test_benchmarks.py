"""Every benchmark's --quick mode runs, ends with ``ratio: X``, and writes what BENCHMARKS.md reports."""

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sampling", "memory", "training", "correlation"])
def test_each_benchmark_prints_the_ratio_its_json_record_holds(tmp_path, name):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick", "--json",
                             str(tmp_path / "out.json")], capture_output=True, text=True, timeout=300,
                            env=os.environ | {"OMP_NUM_THREADS": "2"})
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ratio: \d+\.\d\d", last), last
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["quick"] and record["machine"]["torch"]
    assert f"ratio: {record['ratio']:.2f}" == last  # the headline is the number the JSON carries
    if name == "sampling":
        assert {r["network"] for r in record["sampling"]} == {"flow", "whole model"}
        for r in record["sampling"]:  # each ratio is the two measured throughputs' quotient
            assert r["ratio"] == pytest.approx(r["default"]["mp_per_s"] / r["plain"]["mp_per_s"])
        headline = [r["ratio"] for r in record["sampling"]
                    if r["network"] == "whole model" and r["preset"] == "paper"]
        assert record["ratio"] == pytest.approx(statistics.geometric_mean(headline))
        # the refiner costs work: paper's whole model needs more FLOPs per megapixel than its flow alone
        flops = {r["network"]: r["plain"]["gflop_per_mp"] for r in record["sampling"] if r["preset"] == "paper"}
        assert flops["whole model"] > flops["flow"]
    if name == "memory":
        assert all(job["peak_mb"] < 4096 for job in record["jobs"])
    if name == "training":
        for job in record["training"]:
            assert job["ratio"] == pytest.approx(job["fast"] / job["plain"])
        assert record["ratio"] == pytest.approx(statistics.geometric_mean([j["ratio"] for j in record["training"]]))
    if name == "correlation":
        assert [r["filter"] for r in record["correlation"]] == ["small", "small + content"]
        for r in record["correlation"]:
            assert r["ratio"] == pytest.approx(r["reference_ms"] / r["current_ms"])
            assert r["loss"] == pytest.approx(r["reference_loss"], rel=1e-4)
        assert record["ratio"] == pytest.approx(record["correlation"][0]["ratio"])
