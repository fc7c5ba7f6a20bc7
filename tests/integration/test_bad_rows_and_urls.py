"""Odd rows are rows and network inputs are bounded (issue 23), through the real CLI.

URL inputs: a server on 127.0.0.1 that accepts and never answers, a closed port, HTTP errors and oversized bodies
each become a status row of their item (``url_timeout``, ``url_error``, ``file_not_found``, ``too_large``) within
the configured timeouts, and a Ctrl-C while a URL read waits ends the run at once (exit 130). Odd rows: a path with
a NUL byte or bytes that are not UTF-8 is an ``invalid_path`` row naming its manifest row, a binary Parquet path
column is read as UTF-8, repeated keys follow ``input.duplicate_keys``, a benchmark row without a question is
refused at the start naming file and row, and a ``bytes_column`` that is an image struct is read as one (another
type is refused at the start, naming the column and its Arrow type).

The captioner is the scripted OpenAI-compatible server (tests/helpers/chat_server.py); every input is a real file
made here, every server a real one on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chat_server import ChatServer
from cli_cases import cli
from media_factory import make_image_bytes

# --------------------------------------------------------------------------- servers


class SilentServer:
    """Accepts every connection on 127.0.0.1 and never sends a byte; keeps the connections it accepted."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)  # held open, never answered

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> SilentServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped = True
        self.sock.close()
        for conn in self.accepted:
            conn.close()


class MediaServer:
    """Serves ``files`` on 127.0.0.1: ``/<name>`` with Content-Length; ``/chunked/<name>`` without it (chunked);
    ``/status/<code>`` answers that HTTP status; anything else 404."""

    def __init__(self, files: dict[str, bytes]) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                if parts[0] == "status":
                    self.send_response(int(parts[1]))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                chunked = parts[0] == "chunked"
                data = server.files.get(parts[-1])
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(data), 4096):
                        piece = data[i : i + 4096]
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

        self.files = files
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def __enter__(self) -> MediaServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now: connection refused
    return port


@pytest.fixture(scope="module")
def chat() -> Iterator[ChatServer]:
    with ChatServer() as server:
        yield server


# --------------------------------------------------------------------------- helpers


def annotate_config(path: Path, server: ChatServer, inp: dict[str, Any], **extra: Any) -> Path:
    cfg = {"kind": "annotate", "input": inp,
           "backend": {"name": "openai", "model": "scripted",
                       "openai": {"base_url": server.base_url, "max_retries": 0, "timeout_s": 30}},
           **extra}
    path.write_text(json.dumps(cfg))
    return path


def rows_of(out: Path) -> dict[str, dict[str, Any]]:
    rows = pl.read_parquet(str(out / "*.parquet")).to_dicts()
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), keys  # every key once
    return {r["key"]: r for r in rows}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def caprl(args: list[Any], **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "caprl_kit.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            start_new_session=True, **popen)


def finish(proc: subprocess.Popen[str], seconds: float) -> str:
    """The process's output once it ended; it is killed (and the test fails) if it runs past ``seconds``."""
    try:
        output, _ = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"still running after {seconds} s (hung on a URL?):\n{output[-3000:]}")
    return output


# --------------------------------------------------------------------------- 1. URL inputs are bounded


def test_url_failures_are_status_rows_within_the_configured_timeouts(chat: ChatServer, tmp_path: Path) -> None:
    image = make_image_bytes(color=(0, 128, 0))
    big = make_image_bytes(size=(400, 300), fmt="BMP")  # over the 50 kB cap set below
    with SilentServer() as silent, MediaServer({"ok.png": image, "big.bmp": big}) as media:
        urls = {
            "silent": silent.url("never.png"),
            "refused": f"http://127.0.0.1:{closed_port()}/gone.png",
            "missing": media.url("nothere.png"),
            "error": media.url("status/500"),
            "big": media.url("big.bmp"),
            "big_chunked": media.url("chunked/big.bmp"),
            "ok": media.url("ok.png"),
            "ok_chunked": media.url("chunked/ok.png"),
        }
        manifest = write_jsonl(tmp_path / "m.jsonl", [{"path": u, "name": k} for k, u in urls.items()])
        cfg = annotate_config(tmp_path / "a.json", chat, {"path": str(manifest), "key_column": "name"},
                              media={"url_connect_timeout_s": 2, "url_read_timeout_s": 1, "max_file_bytes": 50_000})
        t0 = time.monotonic()
        output = finish(caprl(["annotate", "--config", cfg, "--output", tmp_path / "out"]), 90)
        took = time.monotonic() - t0
        assert silent.accepted, "the silent server never saw the connection"
    assert "Traceback" not in output, output
    rows = rows_of(tmp_path / "out")
    status = {k: r["status"] for k, r in rows.items()}
    assert status == {"silent": "url_timeout", "refused": "url_error", "missing": "file_not_found",
                      "error": "url_error", "big": "too_large", "big_chunked": "too_large", "ok": "ok",
                      "ok_chunked": "ok"}, (status, output)
    assert "media.url_read_timeout_s=1" in rows["silent"]["error_message"]
    assert urls["silent"] in rows["silent"]["error_message"]
    assert "HTTP 500" in rows["error"]["error_message"]
    assert "max_file_bytes=50000" in rows["big_chunked"]["error_message"]
    assert rows["ok"]["width"] and rows["ok"]["content_hash"]
    # the silent server costs its read timeout (1 s), not a hang: the whole run (interpreter start included)
    assert took < 45, took


@pytest.mark.parametrize("decode", [{}, {"workers": 0}, {"processes": True}],
                         ids=["threads", "inline", "processes"])
def test_ctrl_c_while_a_url_read_waits_exits_130_within_2s(chat: ChatServer, tmp_path: Path,
                                                           decode: dict[str, Any]) -> None:
    (tmp_path / "local.png").write_bytes(make_image_bytes())
    with SilentServer() as silent:
        manifest = write_jsonl(tmp_path / "m.jsonl", [{"path": silent.url(f"img_{i}.png")} for i in range(4)])
        cfg = annotate_config(tmp_path / "a.json", chat, {"path": str(manifest)}, decode=decode)  # default timeouts
        proc = caprl(["annotate", "--config", cfg, "--output", tmp_path / "out"])
        deadline = time.monotonic() + 120
        while not silent.accepted and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert silent.accepted, finish(proc, 5)
        time.sleep(0.3)  # the read is now waiting on the server
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        output = finish(proc, 30)
        took = time.monotonic() - sent
    assert proc.returncode == 130, output
    assert took < 2, f"exited {took:.1f} s after the first Ctrl-C"
    assert "interrupted" in output and "Traceback" not in output, output


# --------------------------------------------------------------------------- 2. odd rows are rows


def test_a_path_with_a_nul_byte_is_a_status_row_naming_its_row(chat: ChatServer, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(make_image_bytes())
    (tmp_path / "b.png").write_bytes(make_image_bytes(color=(0, 0, 255)))
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"path": "a.png"}, {"path": "b\x00.png"}, {"path": "b.png"}])
    cfg = annotate_config(tmp_path / "a.json", chat, {"path": str(manifest)})
    cli(["annotate", "--config", cfg, "--output", tmp_path / "out"], 0)
    rows = rows_of(tmp_path / "out")
    assert {k: r["status"] for k, r in rows.items()} == {"a.png": "ok", "b\\x00.png": "invalid_path", "b.png": "ok"}
    message = rows["b\\x00.png"]["error_message"]
    assert "manifest row 1" in message and "NUL byte" in message, message


def test_paths_that_are_not_utf8_are_status_rows(chat: ChatServer, tmp_path: Path) -> None:
    # a folder holding a file whose name is Latin-1 bytes, and a manifest row naming such a path
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "ok.png").write_bytes(make_image_bytes())
    try:
        (folder / os.fsdecode(b"caf\xe9.png")).write_bytes(make_image_bytes(color=(9, 9, 9)))
    except (UnicodeEncodeError, OSError):
        pytest.skip("this filesystem does not take file names that are not UTF-8")
    cfg = annotate_config(tmp_path / "f.json", chat, {"path": str(folder)})
    cli(["annotate", "--config", cfg, "--output", tmp_path / "out_folder"], 0)
    rows = rows_of(tmp_path / "out_folder")
    assert {k: r["status"] for k, r in rows.items()} == {"ok.png": "ok", "caf\\xe9.png": "invalid_path"}
    assert "not valid UTF-8" in rows["caf\\xe9.png"]["error_message"]

    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "folder/ok.png"}\n{"path": "folder/caf\\udce9.png"}\n')  # JSON's escape of it
    cfg = annotate_config(tmp_path / "m.json", chat, {"path": str(manifest)})
    cli(["annotate", "--config", cfg, "--output", tmp_path / "out_manifest"], 0)
    rows = rows_of(tmp_path / "out_manifest")
    assert {k: r["status"] for k, r in rows.items()} == {"folder/ok.png": "ok", "folder/caf\\xe9.png": "invalid_path"}
    assert "manifest row 1" in rows["folder/caf\\xe9.png"]["error_message"]


def test_a_binary_path_column_is_read_as_utf8(chat: ChatServer, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(make_image_bytes())
    (tmp_path / "é.png").write_bytes(make_image_bytes(color=(0, 0, 255)))
    table = pa.table({"path": pa.array([b"a.png", "é.png".encode(), b"\xff.png"], pa.binary()),
                      "id": pa.array([b"k1", b"k2", b"k3"], pa.binary())})
    pq.write_table(table, tmp_path / "m.parquet")
    cfg = annotate_config(tmp_path / "a.json", chat, {"path": str(tmp_path / "m.parquet")})
    cli(["annotate", "--config", cfg, "--output", tmp_path / "out"], 0)
    rows = rows_of(tmp_path / "out")
    assert {k: r["status"] for k, r in rows.items()} == {"a.png": "ok", "é.png": "ok", "\\xff.png": "invalid_path"}
    assert rows["é.png"]["source"] == str(tmp_path / "é.png")
    cfg = annotate_config(tmp_path / "k.json", chat, {"path": str(tmp_path / "m.parquet"), "key_column": "id"})
    cli(["annotate", "--config", cfg, "--output", tmp_path / "out_keys"], 0)
    assert sorted(rows_of(tmp_path / "out_keys")) == ["k1", "k2", "k3"]


def test_duplicate_keys_are_refused_by_default_or_follow_the_policy(chat: ChatServer, tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.png").write_bytes(make_image_bytes())
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"path": "a.png"}, {"path": "b.png"}, {"path": "a.png"},
                                                 {"path": "a.png"}, {"path": "b.png"}])
    out = tmp_path / "out"
    cfg = annotate_config(tmp_path / "a.json", chat, {"path": str(manifest)})
    cli(["annotate", "--config", cfg, "--output", out], 2, str(manifest), "keys must be unique",
        "'a.png' (item 2)", "'a.png' (item 3)", "'b.png' (item 4)", "input.duplicate_keys=keep_first",
        "input.duplicate_keys=suffix")
    assert not out.exists(), "refused before anything was written"

    cfg = annotate_config(tmp_path / "k.json", chat, {"path": str(manifest), "duplicate_keys": "keep_first"})
    cli(["annotate", "--config", cfg, "--output", tmp_path / "first"], 0)
    assert sorted(rows_of(tmp_path / "first")) == ["a.png", "b.png"]

    cfg = annotate_config(tmp_path / "s.json", chat, {"path": str(manifest), "duplicate_keys": "suffix"})
    cli(["annotate", "--config", cfg, "--output", tmp_path / "suffix"], 0)
    rows = rows_of(tmp_path / "suffix")
    assert sorted(rows) == ["a.png", "a.png#2", "a.png#3", "b.png", "b.png#2"]
    assert {r["status"] for r in rows.values()} == {"ok"}
    # the rerun resumes (the renamed keys are the same in every listing): nothing changes
    cli(["annotate", "--config", cfg, "--output", tmp_path / "suffix"], 0)
    assert rows_of(tmp_path / "suffix") == rows


@pytest.mark.parametrize(("row", "what"), [({"question": None}, "'question' is null"),
                                           ({}, "'question' is missing"),
                                           ({"question": "  "}, "'question' is empty")],
                         ids=["null", "missing", "blank"])
def test_a_benchmark_row_without_a_question_is_refused_naming_file_and_row(
        chat: ChatServer, tmp_path: Path, row: dict[str, Any], what: str) -> None:
    (tmp_path / "a.png").write_bytes(make_image_bytes())
    good = {"image": "a.png", "question": "What color is the square?", "options": ["red", "blue"], "answer": "A"}
    bench = write_jsonl(tmp_path / "bench.jsonl", [good, {**{k: v for k, v in good.items() if k != "question"},
                                                          **row}])
    cfg = tmp_path / "eval.json"
    cfg.write_text(json.dumps({
        "kind": "eval", "benchmarks": [{"name": "b", "path": str(bench)}],
        "captioner": {"name": "openai", "model": "scripted", "openai": {"base_url": chat.base_url}},
        "answerer": {"name": "lexical"}}))
    out = tmp_path / "out"
    cli(["eval", "--config", cfg, "--output", out], 2, str(bench), "row 1", what, "fix or drop the row")
    assert not out.exists()


def test_an_image_struct_as_bytes_column_is_read_and_other_types_are_refused(chat: ChatServer,
                                                                                tmp_path: Path) -> None:
    from official_layouts import write_qa75k

    qa75k = write_qa75k(tmp_path / "CapRL-QA-75K" / "train-00000-of-00001.parquet", n=3)
    cfg = annotate_config(tmp_path / "a.json", chat, {"path": str(qa75k), "bytes_column": "image",
                                                      "key_column": "id"})
    cli(["annotate", "--config", cfg, "--output", tmp_path / "out"], 0)
    rows = rows_of(tmp_path / "out")
    assert len(rows) == 3 and {r["status"] for r in rows.values()} == {"ok"}, rows
    assert all(r["width"] for r in rows.values())

    image = make_image_bytes()
    for name, column, typ in (("list", pa.array([[image]]), "list<element: binary>"),
                              ("text", pa.array(["a.png"]), "string")):
        pq.write_table(pa.table({"media": column}), tmp_path / f"{name}.parquet")
        cfg = annotate_config(tmp_path / f"{name}.json", chat, {"path": str(tmp_path / f"{name}.parquet"),
                                                                "bytes_column": "media"})
        out = tmp_path / f"out_{name}"
        cli(["annotate", "--config", cfg, "--output", out], 2, "input.bytes_column 'media'", f"Arrow type {typ}",
            f"{name}.parquet")
        assert not out.exists()
