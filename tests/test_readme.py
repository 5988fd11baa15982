"""The README's set-up commands and CI stay in step."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return next(line for line in lines if "pytest" in line and "pip install" in line)


def test_ci_runs_exactly_the_readme_test_command():
    assert f"\n{_ci_command()}\n" in (ROOT / "README.md").read_text()


def test_readme_install_commands_constrain_torch_to_the_cpu_build():
    readme = (ROOT / "README.md").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2 and all("-c constraints-cpu.txt" in c for c in commands)
    assert (ROOT / "constraints-cpu.txt").read_text().strip() == "torch==2.13.0"
    assert any(c.endswith("nmflowgan demo") for c in commands)
