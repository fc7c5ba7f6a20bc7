"""The lock on a command's --output (OUTPUT/.caprl.lock): a second run on a folder another live run holds is
refused naming the holder (also with --overwrite, which then deletes nothing); a lock whose process is gone is
taken over; the lock is removed when the run ends, fails or is interrupted; a dry run takes none."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.pipeline import run
from caprl_kit.cli import app
from caprl_kit.errors import CaprlError
from media_factory import make_image_bytes

runner = CliRunner()
LOCK = ".caprl.lock"
# a separate process that claims OUTPUT the way every command does, then waits for its stdin to close
HOLDER = ("import sys\nfrom caprl_kit.io.rundir import prepare_output\nprepare_output(sys.argv[1], 'annotate')\n"
          "print('ready', flush=True)\nsys.stdin.read()\n")


@pytest.fixture()
def job(tiny_models, tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for i in range(2):
        (d / f"img_{i}.png").write_bytes(make_image_bytes(color=(90 * i, 100, 200), size=(64, 64)))
    cfg = tmp_path / "job.yaml"
    cfg.write_text(json.dumps({"kind": "annotate", "input": {"path": str(d)},
                               "backend": {"name": "transformers", "model": str(tiny_models["captioner"]),
                                           "sampling": {"max_tokens": 4}}}))
    return cfg


def config(job: Path, out: Path) -> AnnotateConfig:
    return AnnotateConfig.model_validate({**json.loads(job.read_text()), "output_dir": str(out)})


def hold(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_a_second_run_is_refused_naming_the_holder_and_overwrite_deletes_nothing(job: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = runner.invoke(app, ["annotate", "-c", str(job), "-o", str(out)])
    assert first.exit_code == 0, first.output
    assert not (out / LOCK).exists()  # released when the run ended
    shards = sorted(p.name for p in out.iterdir())
    holder = hold(out)  # another live run holds the folder
    try:
        lock = json.loads((out / LOCK).read_text())
        assert lock["pid"] == holder.pid and lock["host"] == socket.gethostname() and lock["since"]
        for extra in ([], ["--overwrite"]):
            refused = runner.invoke(app, ["annotate", "-c", str(job), "-o", str(out), *extra])
            text = " ".join(refused.output.split())
            assert refused.exit_code == 2, refused.output
            assert f"pid {holder.pid}" in text and socket.gethostname() in text and lock["since"] in text
            assert str(out) in text and "in use by another caprl run" in text
            assert sorted(p.name for p in out.iterdir()) == sorted(shards + [LOCK])  # --overwrite removed nothing
        dry = runner.invoke(app, ["annotate", "-c", str(job), "-o", str(out), "--dry-run"])
        assert dry.exit_code == 0, dry.output  # a dry run takes no lock
        assert json.loads((out / LOCK).read_text())["pid"] == holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not (out / LOCK).exists()  # the holder released it when it exited
    again = runner.invoke(app, ["annotate", "-c", str(job), "-o", str(out), "--overwrite"])
    assert again.exit_code == 0, again.output


def test_the_lock_of_a_killed_run_is_taken_over(job: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "out"
    holder = hold(out)
    holder.kill()  # SIGKILL: no cleanup, the lock stays behind with a pid that is gone
    holder.wait(timeout=30)
    assert json.loads((out / LOCK).read_text())["pid"] == holder.pid
    with caplog.at_level(logging.WARNING, logger="caprl_kit.io.lock"):
        report = run(config(job, out))
    assert report.n_items == 2 and not (out / LOCK).exists()
    assert any(f"pid {holder.pid}" in r.getMessage() and "taking its lock over" in r.getMessage()
               for r in caplog.records)


def test_a_lock_from_another_host_is_refused_with_the_fix(job: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).write_text(json.dumps({"host": "gpu-node-7", "pid": os.getpid(), "since": "2024-01-01T00:00:00"}))
    with pytest.raises(CaprlError, match="on host gpu-node-7") as exc:
        run(config(job, out))
    assert f"delete {out / LOCK}" in str(exc.value)
    assert [p.name for p in out.iterdir()] == [LOCK]  # nothing written


@pytest.mark.parametrize("error", [RuntimeError("engine crashed"), KeyboardInterrupt()])
def test_the_lock_is_held_during_the_run_and_removed_after_a_failure(job: Path, tmp_path: Path, monkeypatch,
                                                                    error: BaseException) -> None:
    import caprl_kit.annotate.pipeline as pipeline

    out = tmp_path / "out"
    seen = []

    def failing_stage(*args, **kwargs):
        seen.append(json.loads((out / LOCK).read_text()))
        raise error

    monkeypatch.setattr(pipeline, "run_stage", failing_stage)
    with pytest.raises(type(error)):
        run(config(job, out))
    assert seen and seen[0]["pid"] == os.getpid()
    assert not (out / LOCK).exists()
    monkeypatch.undo()
    assert run(config(job, out)).n_items == 2 and not (out / LOCK).exists()
