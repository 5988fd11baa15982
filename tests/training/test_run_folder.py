"""A run folder under misuse: locks, failed checkpoint writes, lengths below one, the warm-up's best,
SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from nmflowgan.cli import main
from nmflowgan.config import save_config
from nmflowgan.errors import BadInputError, RunLockedError
from nmflowgan.training.run import LOCK_FILE, RunOptions, read_metrics, run_lock
from tests.conftest import exit_code, tiny_config

# ---- 1 and 8: tiles --------------------------------------------------------------------------------------


def _train_arguments(simcam_tree, config, run, steps=2):
    return ["train", "--data", str(simcam_tree), "--config", str(config), "--steps", str(steps), "--out", str(run),
            "--device", "cpu", "--quiet"]


def test_a_run_folder_in_use_is_refused_naming_the_holder(tmp_path, simcam_tree, capsys):
    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)
    run = tmp_path / "run"
    with run_lock(run):
        holder = json.loads((run / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert main(_train_arguments(simcam_tree, config, run)) == 2
        assert f"in use by PID {os.getpid()} on {socket.gethostname()}" in capsys.readouterr().err
        assert not (run / "metrics.jsonl").exists()
        with pytest.raises(RunLockedError):
            with run_lock(run):
                pass
    assert not (run / LOCK_FILE).exists()
    assert main(_train_arguments(simcam_tree, config, run)) == 0


def test_a_stale_lock_is_reported_and_taken_over(tmp_path, simcam_tree, caplog):
    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)
    run = tmp_path / "run"
    run.mkdir()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    (run / LOCK_FILE).write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname(), "since": "earlier"}))
    assert main(_train_arguments(simcam_tree, config, run)) == 0
    assert f"stale lock left by PID {dead_pid}" in caplog.text
    assert not (run / LOCK_FILE).exists() and (run / "last").exists()


def test_a_lock_from_another_host_is_refused(tmp_path, simcam_tree, capsys):
    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "another-host", "since": "earlier"}))
    assert main(_train_arguments(simcam_tree, config, run)) == 2
    assert "in use by PID 1 on another-host" in capsys.readouterr().err


def test_a_failed_checkpoint_write_keeps_the_last_good_one_and_leaves_no_partial_folder(
        tmp_path, simcam_tree, monkeypatch, capsys):
    from safetensors import SafetensorError

    import nmflowgan.training.checkpoint as checkpoint

    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)
    run = tmp_path / "run"
    real_save, calls = checkpoint.save_file, []

    def fills_the_disk(tensors, path):
        calls.append(path)
        if len(calls) > 1:
            raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")
        real_save(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", fills_the_disk)
    code = main(_train_arguments(simcam_tree, config, run, steps=8) + ["--checkpoint-every", "2"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    assert "No space left on device" in error and f"the last good checkpoint is {run / 'last'}" in error
    assert (run / "last").resolve().name == "step-00000002"
    assert not list((run / "checkpoints").glob(".*")) and not (run / LOCK_FILE).exists()
    monkeypatch.undo()  # space again
    assert main(_train_arguments(simcam_tree, config, run, steps=8) + ["--resume"]) == 0  # resumable


@pytest.mark.parametrize("length", [["--steps", "0"], ["--epochs", "0"], ["--steps", "-1"], ["--steps", "2.5"]])
def test_a_training_length_below_one_is_refused(tmp_path, simcam_tree, length, capsys):
    code = exit_code(["train", "--data", str(simcam_tree), "--out", str(tmp_path / "run"), *length, "--quiet"])
    assert code == 2 and "must be a positive whole number" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(BadInputError, match="must be a positive whole number"):
        RunOptions(data=simcam_tree, out=tmp_path / "run", steps=0)


def test_a_run_within_the_flow_warm_up_does_not_claim_a_best_checkpoint(tmp_path, simcam_tree, capsys):
    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)  # flow warm-up of 2 steps, then the adversarial game
    assert main(_train_arguments(simcam_tree, config, tmp_path / "run", steps=2)) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "run" / "best").exists()
    assert "no 'best'" in out and f"{tmp_path / 'run' / 'best'}" not in out


def test_sigterm_saves_then_exits_with_status_143(tmp_path, simcam_tree):
    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "nmflowgan", *_train_arguments(simcam_tree, config, run, 100000)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(read_metrics(run)) < 3:
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "stopped by SIGTERM" in out and (run / "last").exists() and not (run / LOCK_FILE).exists()


def test_a_data_set_smaller_than_one_batch_is_a_one_line_error_and_leaves_no_run_folder(tmp_path, capsys):
    from nmflowgan.data.simcam import simulate

    data = simulate(tmp_path / "data", cameras=["V1"], isos=[100], scenes=2, size_px=96, seed=0, progress=False)
    run = tmp_path / "run"
    assert exit_code(["train", "--data", str(data), "--preset", "paper", "--steps", "2", "--out", str(run),
                      "--device", "cpu", "--quiet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "fewer than one batch of 128" in error[0], error
    assert not run.exists()
