"""Every benchmark's --quick mode runs, ends with ``ratio: X``, and writes what BENCHMARKS.md reports."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sampling", "memory", "training"])
def test_quick_benchmark(tmp_path, name):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick", "--json",
                             str(tmp_path / "out.json")], capture_output=True, text=True, timeout=300,
                            env=os.environ | {"OMP_NUM_THREADS": "2"})
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ratio: \d+\.\d\d", last), last
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["quick"] and record["ratio"] > 0 and record["machine"]["torch"]
    if name == "sampling":
        assert {r["network"] for r in record["sampling"]} == {"flow", "flow + refiner"}
        assert all(r["plain"]["gflop_per_mp"] > 0 for r in record["sampling"])
    if name == "memory":
        assert all(job["peak_mb"] < 4096 for job in record["jobs"])
    if name == "training":
        assert all(job["plain"] > 0 and job["gflop_per_patch"] > 0 for job in record["training"])
