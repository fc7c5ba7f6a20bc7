"""Engine-level failures are never committed as results: an outage in the middle of a shard is redone, a server
that dies stops the run with its shard uncommitted (the rerun finishes it, every key once), dedup survives the redo
of a shard, and Ctrl-C while the openai stream waits leaves no thread behind (exit 130 from the CLI).

The engine is a real HTTP server on 127.0.0.1 (tests/helpers/chat_server.py) scripted to fail on demand; the one
wrapper below only breaks a stream, which a real server cannot be made to do at a chosen response."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import polars as pl
import pytest

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.pipeline import run
from caprl_kit.backends import BACKENDS
from caprl_kit.backends.base import Request, Response
from caprl_kit.backends.config import BackendConfig
from caprl_kit.backends.openai_http import OpenAIBackend
from caprl_kit.errors import EngineDown
from chat_server import ChatServer
from media_factory import make_image_bytes


class BreaksOnce(OpenAIBackend):
    """The openai back end whose first stream breaks after two responses (an engine crash)."""

    name = "breaks_once"
    streams = 0

    def stream(self, requests: Iterable[Request], **kw: Any) -> Iterator[Response]:
        type(self).streams += 1
        first = type(self).streams == 1
        for n, resp in enumerate(super().stream(requests, **kw)):
            if first and n == 2:
                raise RuntimeError("engine crashed")
            yield resp


@pytest.fixture()
def breaks_once():
    BreaksOnce.streams = 0
    BACKENDS.register("breaks_once", BreaksOnce)
    yield BreaksOnce
    BACKENDS._entries.pop("breaks_once", None)  # type: ignore[attr-defined]


def _images(d: Path, n: int) -> Path:
    d.mkdir(parents=True)
    for i in range(n):
        (d / f"img_{i:02d}.png").write_bytes(make_image_bytes(color=(20 * i, 90, 200), size=(32, 32)))
    return d


def _config(inp: Path, out: Path, url: str, *, name: str = "openai", max_retries: int = 0,
            shard_retries: int = 3, **extra: Any) -> AnnotateConfig:
    return AnnotateConfig.model_validate({
        "input": {"path": str(inp)},
        "backend": {"name": name, "model": "scripted", "sampling": {"n": 1},
                    "openai": {"base_url": url, "max_concurrency": 2, "max_retries": max_retries,
                               "backoff_base_s": 0.02, "backoff_max_s": 0.05, "timeout_s": 10}},
        "sharding": {"shard_size": 4},
        "runner": {"max_shard_retries": shard_retries},
        "output_dir": str(out),
        **extra,
    })


def _rows(out: Path) -> list[dict]:
    return pl.read_parquet(str(out / "*.parquet")).sort("key").to_dicts()


def test_an_outage_in_the_middle_of_a_shard_is_redone_not_committed(tmp_path: Path) -> None:
    inp = _images(tmp_path / "in", 10)
    with ChatServer(fail_arrivals={3, 4, 5}) as server:  # three requests answered 503, no retries left
        report = run(_config(inp, tmp_path / "out", server.base_url))
    rows = _rows(tmp_path / "out")
    assert [r["key"] for r in rows] == sorted(p.name for p in inp.iterdir()), "every key exactly once"
    assert {r["status"] for r in rows} == {"ok"}, [r["error_message"] for r in rows if r["status"] != "ok"]
    assert report.n_ok == 10 and report.n_failed == 0


def test_a_server_killed_mid_shard_stops_the_run_uncommitted_and_the_rerun_finishes(tmp_path: Path) -> None:
    inp = _images(tmp_path / "in", 10)
    out = tmp_path / "out"
    with ChatServer(die_after=6) as server:
        t0 = time.perf_counter()
        with pytest.raises(EngineDown) as err:
            run(_config(inp, out, server.base_url, max_retries=1, shard_retries=1))
        took = time.perf_counter() - t0
        port = server.port
    committed = sorted(out.glob("*_stats.json"))
    assert {r["status"] for r in _rows(out)} == {"ok"}, "no engine failure was committed as a row"
    assert len(committed) == 1, "the shard finished before the kill is kept; the one it broke is not committed"
    assert took < 20, f"a dead server was noticed after {took:.1f}s"
    assert "uncommitted" in str(err.value) and "rerun" in str(err.value)
    with ChatServer(port=port):  # the server is back on the same address: the rerun does only the missing shards
        report = run(_config(inp, out, f"http://127.0.0.1:{port}/v1", max_retries=1, shard_retries=1))
    rows = _rows(out)
    assert [r["key"] for r in rows] == sorted(p.name for p in inp.iterdir())
    assert {r["status"] for r in rows} == {"ok"} and report.shards_skipped == 1


def test_dedup_keeps_the_first_captions_when_a_broken_stream_redoes_its_shard(tmp_path: Path, breaks_once) -> None:
    inp = _images(tmp_path / "in", 7)
    shutil.copy(inp / "img_00.png", inp / "img_00_copy.png")  # same content, listed right after its original
    with ChatServer() as server:
        run(_config(inp, tmp_path / "out", server.base_url, name="breaks_once", output={"dedup": True}))
    assert breaks_once.streams == 2, "the first stream broke and its uncommitted shards were redone"
    rows = {r["key"]: r for r in _rows(tmp_path / "out")}
    assert len(rows) == 8
    assert rows["img_00.png"]["status"] == "ok" and rows["img_00.png"]["caption"], "the original keeps its caption"
    assert rows["img_00_copy.png"]["status"] == "duplicate"
    assert "img_00.png" in rows["img_00_copy.png"]["error_message"]
    assert all(r["status"] == "ok" for k, r in rows.items() if k != "img_00_copy.png")


def _interrupted_requests(n: int) -> Iterator[Request]:
    for i in range(n):
        yield Request.user(f"SLOW {i}", id=str(i))
    time.sleep(0.05)  # the requests are in flight
    raise KeyboardInterrupt


def test_ctrl_c_during_an_openai_stream_cancels_everything_and_leaves_no_thread() -> None:
    with ChatServer() as server:
        backend = OpenAIBackend(BackendConfig.model_validate(
            {"name": "openai", "model": "scripted", "openai": {"base_url": server.base_url, "max_concurrency": 8}}))
        with pytest.raises(KeyboardInterrupt):  # not "Set changed size during iteration" from the cleanup
            for _ in backend.stream(_interrupted_requests(6)):
                pass
    alive = [t.name for t in threading.enumerate() if t.name == "caprl-openai"]
    assert not alive, "the stream's event-loop thread outlived it"


def test_ctrl_c_while_annotate_waits_on_the_server_exits_130(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(6):
        (inp / f"img_{i}.png").write_bytes(make_image_bytes(color=(30 * i, 0, 0), size=(32, 32)))
    with ChatServer() as server:
        # every caption request waits 0.2 s on the server (its prompt says SLOW)
        cfg = tmp_path / "annotate.yaml"
        cfg.write_text(f"kind: annotate\nversion: 1\ninput: {{path: {inp}}}\n"
                       f"backend: {{name: openai, model: scripted, openai: {{base_url: '{server.base_url}', "
                       "max_concurrency: 1}}\nprompt: {text: SLOW describe}\n")
        cmd = [sys.executable, "-m", "caprl_kit.cli", "annotate", "--config", str(cfg), "--output",
               str(tmp_path / "out")]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        deadline = time.monotonic() + 120
        while not server.bodies and time.monotonic() < deadline:  # wait until the stream is running
            time.sleep(0.05)
        assert server.bodies, "the command never reached the server"
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output


def test_retry_failed_redoes_only_the_failed_rows_in_place_and_every_key_once(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from caprl_kit.cli import app

    inp = _images(tmp_path / "in", 8)
    out = tmp_path / "out"
    with ChatServer(garbled_arrivals={2, 6}) as server:  # two answers the client cannot read: generation_failed
        first = run(_config(inp, out, server.base_url))
        assert first.n_failed == 2 and first.status_counts.get("generation_failed") == 2
        before = {r["key"]: r for r in _rows(out)}
        sent = len(server.bodies)
        cfg = tmp_path / "annotate.yaml"
        cfg.write_text(f"kind: annotate\ninput: {{path: {inp}}}\nsharding: {{shard_size: 4}}\n"
                       f"backend: {{name: openai, model: scripted, sampling: {{n: 1}}, openai: {{base_url: "
                       f"'{server.base_url}', max_concurrency: 2, max_retries: 0, backoff_base_s: 0.02, "
                       "backoff_max_s: 0.05, timeout_s: 10}}\n")
        result = CliRunner().invoke(app, ["annotate", "--config", str(cfg), "--output", str(out), "--retry-failed"])
        assert result.exit_code == 0, result.output
        assert len(server.bodies) - sent == 2, "only the two failed rows were sent again"
    rows = _rows(out)
    assert [r["key"] for r in rows] == sorted(p.name for p in inp.iterdir()), "every key exactly once"
    assert {r["status"] for r in rows} == {"ok"}
    for r in rows:
        if before[r["key"]]["status"] == "ok":
            assert r == before[r["key"]], "a row that was fine is written again as it was"
    stats = [json.loads(p.read_text()) for p in sorted(out.glob("*_stats.json"))]
    assert sum(s["n_failed"] for s in stats) == 0 and sum(s["n_items"] for s in stats) == 8


def test_retry_failed_is_refused_where_a_command_does_not_redo_rows(tmp_path: Path) -> None:
    from caprl_kit import commands
    from caprl_kit.curate.config import CurateConfig
    from caprl_kit.errors import ConfigError

    cfg = CurateConfig.model_validate({"input": {"path": str(tmp_path)}, "output_dir": str(tmp_path / "o")})
    with pytest.raises(ConfigError, match="--retry-failed"):
        commands.run(cfg, retry_failed=True)
