"""Each node's log is kept on the output volume under its attempt and pod, rotated, and holds what
the console shows and what it hides; a node that cannot write it still runs."""
from __future__ import annotations

import io
import logging

import yaml

from hyft_trainer import launcher
from hyft_trainer.contract import ATTEMPT_ENV, LOG_BACKUPS, POD_NAME_ENV, log_file


def test_an_invalid_run_leaves_its_reason_in_the_attempts_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ATTEMPT_ENV, "3")
    monkeypatch.setenv(POD_NAME_ENV, "job-worker-0")
    out = tmp_path / "out"
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"model_name_or_path": str(tmp_path / "no-model"),
                                      "data_files": [{"path": "x.jsonl"}], "output_dir": str(out)}))
    assert launcher.main([str(config)]) == 2
    log = out / log_file(3, "job-worker-0")
    assert "no-model is not a folder" in log.read_text()
    assert "no-model is not a folder" in capsys.readouterr().err  # and on the console, as before


def test_the_log_keeps_the_traceback_the_console_leaves_out(tmp_path, monkeypatch):
    monkeypatch.setenv(POD_NAME_ENV, "job-master-0")
    log = launcher.NodeLog(str(tmp_path))
    exit_file = tmp_path / "exit"
    exit_file.write_text("2\ndata.jsonl line 3: empty content")
    console = io.BytesIO()
    source = io.BytesIO(b"step 1\nTraceback (most recent call last):\n  File x\nValueError: boom\n")
    relay = launcher.Relay(source, console, log, exit_file)
    relay.run()
    log.close()
    assert console.getvalue() == b"step 1\n"
    assert relay.last_line == "ValueError: boom"
    assert (tmp_path / log_file(0, "job-master-0")).read_text().splitlines() == [
        "step 1", "Traceback (most recent call last):", "  File x", "ValueError: boom"]


def test_the_log_is_rotated_and_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "LOG_MAX_BYTES", 1000)
    log = launcher.NodeLog(str(tmp_path))
    for i in range(200):
        log.write(f"line {i:04d} " + "x" * 40)
    log.close()
    files = sorted((tmp_path / "logs" / "attempt-0").iterdir())
    assert len(files) == 1 + LOG_BACKUPS and all(f.stat().st_size <= 1000 for f in files)
    assert "line 0199" in files[0].read_text()  # the newest lines are in the file without a suffix


def test_an_unwritable_output_only_costs_the_log(tmp_path, capsys):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    log = launcher.NodeLog(str(blocked))
    log.say("hyft: still running")
    assert "cannot keep a log" in capsys.readouterr().err
    assert not logging.getLogger(log._logger.name).handlers
