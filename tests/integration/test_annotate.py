"""caprl annotate end to end on the tiny captioner: every input exactly once, failures as rows, resume after a
real kill, refusal of a changed config, every input format, consumers' own loaders."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.pipeline import run, status
from caprl_kit.cli import app
from caprl_kit.config import deep_merge
from caprl_kit.errors import ResumeRefused
from media_factory import make_image_bytes, make_video_bytes

runner = CliRunner()


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    for i in range(5):
        (d / f"img_{i}.png").write_bytes(make_image_bytes(color=(40 * i, 100, 200), size=(64 + 8 * i, 64)))
    (d / "sub" / "clip.mp4").write_bytes(make_video_bytes(n_frames=20, fps=10))
    (d / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (d / "empty.png").write_bytes(b"")
    (d / "notes.txt").write_text("ignored: not media")
    return d


def config(tiny_models, inp: dict, out: Path, **extra) -> AnnotateConfig:
    data = {
        "input": inp,
        "backend": {"name": "transformers", "model": str(tiny_models["captioner"]), "batch_size": 3,
                    "sampling": {"n": 2, "temperature": 1.0, "max_tokens": 6, "seed": 0}},
        "media": {"video_max_frames": 4},
        "sharding": {"shard_size": 3},
        "output_dir": str(out),
    }
    if extra.get("backend", {}).get("name", "transformers") != "transformers":
        del data["backend"]  # another engine: none of the transformers settings apply (batch_size is refused)
    return AnnotateConfig.model_validate(deep_merge(data, extra))


def rows_of(out: Path) -> list[dict]:
    return pl.read_parquet(str(out / "*.parquet")).sort("key").to_dicts()


def test_folder_end_to_end_every_input_once(tiny_models, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = run(config(tiny_models, {"path": str(folder)}, out, output={"export_jsonl": True}))
    rows = rows_of(out)
    keys = [r["key"] for r in rows]
    assert keys == sorted(["empty.png", "img_0.png", "img_1.png", "img_2.png", "img_3.png", "img_4.png",
                           "sub/broken.jpg", "sub/clip.mp4"])
    by_key = {r["key"]: r for r in rows}
    assert by_key["empty.png"]["status"] == "empty_file"
    assert by_key["sub/broken.jpg"]["status"] == "failed_to_decode" and by_key["sub/broken.jpg"]["error_message"]
    assert by_key["sub/broken.jpg"]["caption"] is None and by_key["sub/broken.jpg"]["captions"] == []
    good = by_key["img_3.png"]
    assert good["status"] == "ok" and good["error_message"] is None
    assert len(good["captions"]) == 2 and good["caption"] == good["captions"][0]
    assert good["prompt"] == "Please describe this image in detail." and good["prompt_id"] == "caprl_image"
    assert good["sampling"]["n"] == 2 and good["width"] % 28 == 0 and len(good["content_hash"]) == 64
    video = by_key["sub/clip.mp4"]
    assert video["status"] == "ok" and video["media_type"] == "video"
    assert video["prompt_id"] == "caprl_video_timestamped" and "[mm:ss]" in video["prompt"]
    assert video["n_frames"] == 4 and len(video["frame_timestamps"]) == 4
    assert report.n_items == 8 and report.n_ok == 6 and report.n_failed == 2
    assert report.status_counts == {"ok": 6, "empty_file": 1, "failed_to_decode": 1}
    # shard layout, sidecars, schema tag, manifest, resolved config
    names = sorted(p.name for p in out.iterdir())
    assert names == ["00000.parquet", "00000_stats.json", "00001.parquet", "00001_stats.json", "00002.parquet",
                     "00002_stats.json", "caprl_run.json", "captions.jsonl", "config.identity.json", "config.resolved.yaml",
                     "run_manifest.json"]
    assert pq.read_schema(out / "00000.parquet").metadata[b"caprl.schema"] == b"annotation/v2"
    exported = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert len(exported) == 6 and {"video", "caption"} <= set(exported[-1]) | {"video"}
    # n = 2: every line carries both captions, the first also as the single-caption field
    assert all(len(x["captions"]) == 2 and x["caption"] == x["captions"][0] for x in exported)
    # consumers load it without conversion
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(out / "*.parquet"), split="train")
    assert ds.num_rows == 8 and set(ds.column_names) >= {"key", "caption", "status", "error_message"}


def test_rerun_skips_finished_and_changed_config_is_refused(tiny_models, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = config(tiny_models, {"path": str(folder)}, out)
    run(cfg)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    again = run(cfg)
    assert again.shards_done == 0 and again.shards_skipped == 3 and again.n_items == 8
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == before
    with pytest.raises(ResumeRefused, match=r"config changed \(backend.sampling.temperature\)"):
        run(config(tiny_models, {"path": str(folder)}, out, backend={"sampling": {"temperature": 0.5}}))
    (folder / "img_new.png").write_bytes(make_image_bytes())
    with pytest.raises(ResumeRefused, match="input changed"):
        run(cfg)
    assert run(cfg, overwrite=True).n_items == 9


def test_sigkill_at_random_points_then_resume_gives_every_item_exactly_once(tiny_models, tmp_path: Path) -> None:
    """Kill the job with SIGKILL three times at random moments (after 1-3 more shards plus a random delay,
    so some kills land inside a shard write), then let it finish: every key exactly once."""
    import random

    rng = random.Random(1234)
    d = tmp_path / "many"
    d.mkdir()
    for i in range(30):
        (d / f"im_{i:02d}.png").write_bytes(make_image_bytes(color=(i * 8, 50, 90)))
    out = tmp_path / "out"
    cfg_file = tmp_path / "job.yaml"
    cfg_file.write_text(json.dumps({
        "kind": "annotate", "input": {"path": str(d)},
        "backend": {"name": "transformers", "model": str(tiny_models["captioner"]), "batch_size": 2,
                    "sampling": {"max_tokens": 4, "seed": 0}},
        "sharding": {"shard_size": 3},
    }))
    caprl = [sys.executable, "-m", "caprl_kit", "annotate", "--config", str(cfg_file), "--output", str(out)]
    kills = []
    for _ in range(3):
        before = len(list(out.glob("*_stats.json")))
        target = min(before + rng.randint(1, 2), 6)
        proc = subprocess.Popen(caprl, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and len(list(out.glob("*_stats.json"))) < target and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills.append(len(list(out.glob("*_stats.json"))))
    assert kills[0] < 10, f"the first kill must land mid-run: {kills}"
    result = subprocess.run(caprl, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = rows_of(out)
    assert [r["key"] for r in rows] == [f"im_{i:02d}.png" for i in range(30)]  # 0 lost, 0 duplicated
    assert all(r["status"] == "ok" for r in rows)
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    info = status(str(out))
    assert info["shards_done"] == info["shards_total"] == 10 and info["items_done"] == 30


@pytest.fixture()
def manifest_inputs(tmp_path: Path, folder: Path) -> dict[str, Path]:
    files = sorted(p for p in folder.glob("img_*.png"))
    rows = [{"path": f"../in/{p.name}", "id": f"id-{i}", "license": "cc-by", "score": i / 10} for i, p in enumerate(files)]
    rows.append({"path": "../in/does_not_exist.png", "id": "id-missing", "license": "cc-by", "score": 0.9})
    m = tmp_path / "manifests"
    m.mkdir()
    (m / "list.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pl.DataFrame(rows).write_csv(m / "list.csv")
    good = rows[: len(files)]
    pq.write_table(pa.table({"id": [r["id"] for r in good], "blob": [p.read_bytes() for p in files],
                             "license": ["cc0"] * len(good)}), m / "bytes.parquet")
    import datasets

    datasets.Dataset.from_dict({"image": [str(p) for p in files], "id": [r["id"] for r in good]}).save_to_disk(
        str(m / "hf"))
    with tarfile.open(m / "shard-000.tar", "w") as tar:
        for i, p in enumerate(files):
            for name, data in ((f"s{i:03d}.png", p.read_bytes()), (f"s{i:03d}.json", b"{}")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return {"jsonl": m / "list.jsonl", "csv": m / "list.csv", "parquet": m / "bytes.parquet", "hf": m / "hf",
            "tar": m / "shard-*.tar"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "hf", "tar"])
def test_manifest_formats(tiny_models, manifest_inputs, tmp_path: Path, fmt: str) -> None:
    inp: dict = {"path": str(manifest_inputs[fmt])}
    if fmt in ("jsonl", "csv"):
        inp.update(key_column="id", carry_columns=["license", "score"])
    elif fmt == "parquet":
        inp.update(key_column="id", bytes_column="blob", carry_columns=["license"])
    elif fmt == "hf":
        inp.update(key_column="id")
    out = tmp_path / f"out-{fmt}"
    report = run(config(tiny_models, inp, out, sharding={"shard_size": 2}))
    rows = rows_of(out)
    if fmt in ("jsonl", "csv"):  # these manifests also list a missing file: a status row, not a crash
        assert report.n_items == 6 and report.n_ok == 5 and report.status_counts["file_not_found"] == 1
        assert [r["key"] for r in rows] == [f"id-{i}" for i in range(5)] + ["id-missing"]
        assert "does_not_exist.png" in rows[-1]["error_message"]
    else:
        assert report.n_items == 5 and report.n_ok == 5, report.status_counts
    if fmt in ("jsonl", "csv"):
        assert {r["license"] for r in rows} == {"cc-by"} and rows[3]["score"] == pytest.approx(0.3)
        assert rows[0]["source"].endswith("in/img_0.png")
    if fmt == "parquet":
        assert rows[0]["source"] is None and rows[0]["license"] == "cc0"
    if fmt == "tar":
        assert rows[0]["key"] == "shard-000.tar/s000"


def test_embedded_media_are_read_by_the_worker_processes(tiny_models, manifest_inputs, tmp_path: Path) -> None:
    """Tar members and Parquet bytes go to the worker processes as locators: the rows match the local runner's."""
    for fmt, extra in (("tar", {}), ("parquet", {"key_column": "id", "bytes_column": "blob"})):
        inp = {"path": str(manifest_inputs[fmt]), **extra}
        local = run(config(tiny_models, inp, tmp_path / f"local-{fmt}", sharding={"shard_size": 2}))
        mp = run(config(tiny_models, inp, tmp_path / f"mp-{fmt}", sharding={"shard_size": 2},
                        runner={"name": "multiprocess", "num_workers": 2}))
        assert mp.n_ok == local.n_ok == 5
        cols = ["key", "status", "width", "height"]
        assert [{c: r[c] for c in cols} for r in rows_of(tmp_path / f"mp-{fmt}")] == \
            [{c: r[c] for c in cols} for r in rows_of(tmp_path / f"local-{fmt}")]


def test_memory_filesystem_in_and_out(tiny_models) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    for i in range(3):
        fs.pipe(f"/caprl-in/pics/p{i}.png", make_image_bytes(color=(0, 80 * i, 0)))
    report = run(config(tiny_models, {"path": "memory://caprl-in/pics"}, Path("x"),
                        output_dir="memory://caprl-out/run"))
    assert report.n_ok == 3
    table = pq.read_table(io.BytesIO(fs.cat("/caprl-out/run/00000.parquet")))
    assert table.column("key").to_pylist() == ["p0.png", "p1.png", "p2.png"]


def test_dedup_by_content_hash(tiny_models, tmp_path: Path) -> None:
    d = tmp_path / "dups"
    d.mkdir()
    data = make_image_bytes(color=(1, 2, 3))
    for name in ("a.png", "b.png", "c.png"):
        (d / name).write_bytes(data)
    (d / "d.png").write_bytes(make_image_bytes(color=(9, 9, 9)))
    report = run(config(tiny_models, {"path": str(d)}, tmp_path / "out", output={"dedup": True},
                        sharding={"shard_size": 2}))
    by_key = {r["key"]: r for r in rows_of(tmp_path / "out")}
    assert [by_key[f"{k}.png"]["status"] for k in "abcd"] == ["ok", "duplicate", "duplicate", "ok"]
    assert by_key["c.png"]["error_message"] == "same content as a.png"
    assert report.status_counts == {"ok": 2, "duplicate": 2}


def test_multiprocess_runner(tiny_models, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "mp"  # decode processes inside the worker processes: the workers may start children
    report = run(config(tiny_models, {"path": str(folder)}, out, runner={"name": "multiprocess", "num_workers": 2},
                        decode={"processes": True}))
    assert report.n_items == 8 and report.shards_done == 3
    assert len(rows_of(out)) == 8


def test_cli_run_status_and_refusal(tiny_models, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cfg = tmp_path / "job.yaml"
    cfg.write_text(json.dumps({"kind": "annotate", "input": {"path": str(folder)},
                               "backend": {"name": "transformers", "model": str(tiny_models["captioner"]),
                                           "sampling": {"max_tokens": 4}}}))
    first = runner.invoke(app, ["annotate", "-c", str(cfg), "-o", str(out)])
    assert first.exit_code == 0, first.output
    assert "summary" in first.output and "failed_to_decode" in first.output
    assert (out / "config.resolved.yaml").exists()
    shown = runner.invoke(app, ["annotate", "status", str(out)])
    assert shown.exit_code == 0 and "8 / 8" in shown.output
    refused = runner.invoke(app, ["annotate", "-c", str(cfg), "-o", str(out), "backend.sampling.max_tokens=5"])
    assert refused.exit_code == 2
    assert "--overwrite" in " ".join(refused.output.split())
    redo = runner.invoke(app, ["annotate", "-c", str(cfg), "-o", str(out), "--overwrite", "backend.sampling.max_tokens=5"])
    assert redo.exit_code == 0, redo.output


def test_reader_streams_without_holding_the_listing(tmp_path: Path) -> None:
    import tracemalloc

    from caprl_kit.annotate.pipeline import fingerprint_input

    m = tmp_path / "big.jsonl"
    with m.open("w") as fh:
        for i in range(200_000):
            fh.write(json.dumps({"path": f"/data/images/{i:08d}.jpg"}) + "\n")
    cfg = AnnotateConfig.model_validate({"input": {"path": str(m)}, "backend": {"name": "lexical"}})
    tracemalloc.start()  # what the duplicate-key check keeps (input.duplicate_keys): the keys, nothing else
    keys = {f"/data/images/{i:08d}.jpg" for i in range(200_000)}
    _, key_set = tracemalloc.get_traced_memory()
    del keys
    tracemalloc.stop()
    tracemalloc.start()
    fp, n = fingerprint_input(cfg)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 200_000
    assert peak < 2_000_000 + key_set, f"peak {peak} bytes (keys: {key_set}): the listing was held in memory"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_relative_manifest_paths_become_absolute_sources(tmp_path: Path, monkeypatch, fmt: str) -> None:
    """A manifest named by a relative path: its rows' relative media paths resolve against its folder into
    absolute sources, so curated datasets and eval manifests written from them work from any directory."""
    from caprl_kit.io.config import InputConfig
    from caprl_kit.io.readers import iter_items

    (tmp_path / "data").mkdir()
    rows = [{"path": "images/a.png"}, {"path": "/abs/b.png"}]
    if fmt == "jsonl":
        (tmp_path / "data" / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data" / "m.parquet")
    monkeypatch.chdir(tmp_path)
    items = list(iter_items(InputConfig(path=f"data/m.{fmt}")))
    assert [i.source for i in items] == [str(tmp_path / "data" / "images" / "a.png"), "/abs/b.png"]


def test_adaptive_batches_respect_both_caps() -> None:
    from caprl_kit.backends.base import Request, estimate_tokens
    from caprl_kit.io.batching import batches_by_cost
    from PIL import Image

    requests = [Request.user("", images=[Image.new("RGB", (s, s))]) for s in (280, 56, 560, 56, 280, 56)]
    costs = [estimate_tokens(r) for r in requests]
    assert costs == [100, 4, 400, 4, 100, 4]  # one token per 28x28 patch
    batches = batches_by_cost(costs, max_items=2, max_tokens=300)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) <= 2
        assert sum(costs[i] for i in b) <= 300 or len(b) == 1
    assert [2] in batches  # the oversized item runs alone


@pytest.mark.slow
def test_ray_runner_gives_the_same_rows_as_the_local_runner(tiny_models, folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    deterministic = {"backend": {"sampling": {"temperature": 0.0, "n": 1}}}
    run(config(tiny_models, {"path": str(folder)}, tmp_path / "local", **deterministic))
    report = run(config(tiny_models, {"path": str(folder)}, tmp_path / "ray", runner={"name": "ray", "num_workers": 2},
                        **deterministic))
    assert report.shards_done == 3 and report.n_items == 8
    cols = ["key", "status", "caption", "captions", "completion_tokens", "content_hash", "error_message"]
    local = pl.read_parquet(str(tmp_path / "local" / "*.parquet")).select(cols).sort("key")
    ray_rows = pl.read_parquet(str(tmp_path / "ray" / "*.parquet")).select(cols).sort("key")
    assert local.to_dicts() == ray_rows.to_dicts()


def _timing_server():
    pytest.importorskip("uvicorn")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from gpu_timing_server import EngineConfig, serve_thread

    return EngineConfig, serve_thread


def _openai(url: str) -> dict:
    return {"name": "openai", "model": "gpu-timing", "sampling": {"n": 1},
            "openai": {"base_url": url, "max_concurrency": 16}}


@pytest.mark.slow
@pytest.mark.parametrize("runner_name", ["ray", "multiprocess"])
def test_a_worker_keeps_its_engine_fed_across_shards(tiny_models, tmp_path: Path, runner_name: str) -> None:
    """openai back end against the GPU-timing server (continuous batching): inside one worker (Ray actor or
    process) the next shard enters the engine while the previous one's last captions run, so more requests run at
    once than one shard has."""
    if runner_name == "ray":
        pytest.importorskip("ray")
    import httpx

    EngineConfig, serve_thread = _timing_server()
    d = tmp_path / "in"
    d.mkdir()
    for i in range(24):
        (d / f"img_{i:02d}.png").write_bytes(make_image_bytes(color=(10 * i, 100, 200), size=(32, 32)))
    engine = EngineConfig(max_running=16, step_s=0.005, median_tokens=30, sigma=0.8, seed=1)
    with serve_thread(engine) as url:
        report = run(config(tiny_models, {"path": str(d)}, tmp_path / "out", sharding={"shard_size": 4},
                            runner={"name": runner_name, "num_workers": 1}, backend=_openai(url)))
        seen = httpx.get(url.rsplit("/v1", 1)[0] + "/stats").json()
    assert report.n_ok == 24 and report.shards_done == 6
    assert seen["completed_sequences"] == 24
    assert seen["peak_running"] > 4, seen  # one shard at a time per actor: never more than its 4 requests


@pytest.mark.slow
def test_a_killed_worker_process_stops_the_run_with_one_message_and_the_rerun_completes(tiny_models,
                                                                                        tmp_path: Path) -> None:
    import multiprocessing
    import signal
    import threading

    from caprl_kit.errors import CaprlError

    EngineConfig, serve_thread = _timing_server()
    d = tmp_path / "in"
    d.mkdir()
    for i in range(40):
        (d / f"img_{i:02d}.png").write_bytes(make_image_bytes(color=(5 * i, 100, 200), size=(32, 32)))
    out = tmp_path / "out"
    engine = EngineConfig(max_running=8, step_s=0.02, median_tokens=20, sigma=0.5, seed=3)
    with serve_thread(engine) as url:
        cfg = config(tiny_models, {"path": str(d)}, out, sharding={"shard_size": 4},
                     runner={"name": "multiprocess", "num_workers": 2}, backend=_openai(url))
        box: dict = {}

        def first_run() -> None:
            try:
                run(cfg)
            except CaprlError as exc:
                box["error"] = exc

        t = threading.Thread(target=first_run)
        t.start()
        deadline = time.monotonic() + 120
        while not list(out.glob("*_stats.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        victim = next(p for p in multiprocessing.active_children() if p.name == "caprl-worker-1")
        os.kill(victim.pid, signal.SIGKILL)
        t.join(120)
        assert not t.is_alive()
        message = str(box.get("error"))
        assert "worker process 1" in message and "rerun to resume" in message, message
        done_before = len(list(out.glob("*_stats.json")))
        assert 1 <= done_before < 10
        report = run(cfg)  # the same command again: resumes
    assert report.shards_skipped == done_before and report.shards_done + report.shards_skipped == 10
    keys = [r["key"] for r in rows_of(out)]
    assert sorted(keys) == sorted(f"img_{i:02d}.png" for i in range(40)), "every key exactly once"


MONITOR_REPLIES = [
    ("A red square sits near a blue circle. A green line runs under both.", "stop"),
    ("The image shows a red square. It sits near a blue circle.", "stop"),
    ("A red square at the left . the left . the left . the left . the left . the left .", "stop"),
    ("A red square near a blue circle. This detailed description captures every element of the image.", "stop"),
    ("A red square near a blue circle and a green", "length"),
]


def test_caption_monitors_in_rows_summary_status_and_clean(tiny_models, tmp_path: Path) -> None:
    from chat_server import ChatServer

    d = tmp_path / "in"
    d.mkdir()
    for i in range(10):
        (d / f"img_{i}.png").write_bytes(make_image_bytes(color=(20 * i, 0, 0), size=(32, 32)))
    out = tmp_path / "out"
    with ChatServer(MONITOR_REPLIES) as server:
        report = run(config(tiny_models, {"path": str(d)}, out, output={"clean": True},
                            backend={"name": "openai", "model": "scripted", "sampling": {"n": 1},
                                     "openai": {"base_url": server.base_url, "max_concurrency": 1}}))
    rows = rows_of(out)
    assert [r["caption_flags"] for r in rows[:5]] == [[[]], [["boilerplate_opener"]], [["repetitive"]],
                                                      [["meta_ending"]], [["truncated"]]]
    assert rows[1]["caption_clean"] == "A red square. It sits near a blue circle."
    assert rows[3]["caption_clean"] == "A red square near a blue circle."
    assert rows[0]["caption_clean"] == rows[0]["caption"]
    for flag in ("boilerplate_opener", "repetitive", "meta_ending", "truncated"):
        assert report.metrics[f"caption_{flag}_rate"] == pytest.approx(0.2), flag
    assert report.metrics["caption_empty_rate"] == 0.0
    info = status(str(out))
    assert info["caption_flags"]["truncated"] == pytest.approx(0.2)
    shown = runner.invoke(app, ["annotate", "status", str(out)])
    assert shown.exit_code == 0 and "captions truncated" in shown.output and "20.0%" in shown.output
