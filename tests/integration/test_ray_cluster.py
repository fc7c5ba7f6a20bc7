"""`runner: ray` on a real two-node Ray cluster on this machine (two raylets via ``ray.cluster_utils.Cluster``), each
node declaring two logical GPUs: caprl annotate and caprl curate join it through ``runner.address``; the rows equal
the local runner's; the shards ran on both nodes; every worker got GPU ids of its own (Ray sets
CUDA_VISIBLE_DEVICES from them; the tiny models still run on the CPU, where CUDA finds no device)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.pipeline import run as annotate
from caprl_kit.annotate.pipeline import status
from caprl_kit.config import deep_merge
from caprl_kit.curate.config import CurateConfig
from caprl_kit.curate.pipeline import run as curate
from caprl_kit.curate.stages import stage_dir
from caprl_kit.io.rundir import RunDir
from caprl_kit.schemas.annotation import AnnotationRow
from caprl_kit.synthetic import write_scenes
from cli_cases import cli
from media_factory import make_image_bytes

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 3, "num_gpus": 2, "include_dashboard": False})
    c.add_node(num_cpus=3, num_gpus=2)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def _images(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        (folder / f"img_{i:02d}.png").write_bytes(make_image_bytes(color=(5 * i, 90, 200), size=(64, 64)))
    return folder


def test_a_node_that_leaves_mid_run_costs_its_shard_and_the_run_goes_on(tiny_models, tmp_path: Path, caplog) -> None:
    """Its own cluster: a head and a worker node with one logical GPU each, a 1-GPU worker on each. The worker node
    is removed once it has finished a shard: the shard it was running is redone on the head's worker (its own
    actor cannot come back: no GPU is free), and every key is there exactly once."""
    import threading
    import time

    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 3, "num_gpus": 1, "include_dashboard": False})
    leaving = c.add_node(num_cpus=3, num_gpus=1)
    c.wait_for_nodes()
    out = tmp_path / "ray"
    run_dir = RunDir(str(out), AnnotationRow)
    removed: list[str] = []

    def remove_when_it_has_worked() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            if out.exists():
                by_node = {s.worker.node_id for s in run_dir.read_stats()}
                if leaving.node_id in by_node:
                    c.remove_node(leaving)
                    removed.append(leaving.node_id)
                    return
            time.sleep(0.05)

    remover = threading.Thread(target=remove_when_it_has_worked, daemon=True)
    try:
        remover.start()
        with caplog.at_level("WARNING", logger="caprl_kit"):
            report = annotate(_annotate_cfg(tiny_models, _images(tmp_path / "in", 40), out,
                                            backend={"sampling": {"max_tokens": 24}},
                                            runner={"name": "ray", "num_workers": 2, "address": c.address}))
        remover.join(timeout=10)
    finally:
        c.shutdown()
    assert removed, "the worker node never finished a shard before the run ended"
    keys = run_dir.read_table().column("key").to_pylist()
    assert sorted(keys) == sorted(f"img_{i:02d}.png" for i in range(40)) and report.n_ok == 40
    nodes = {s.worker.node_id for s in run_dir.read_stats()}
    assert removed[0] in nodes and len(nodes) == 2  # both nodes wrote shards; the head finished the run
    assert "died" in caplog.text and "redoing the shard on another worker" in caplog.text  # what the user sees


def _annotate_cfg(tiny_models, folder: Path, out: Path, **extra) -> AnnotateConfig:
    base = {"input": {"path": str(folder)},
            "backend": {"name": "transformers", "model": str(tiny_models["captioner"]), "batch_size": 2,
                        "sampling": {"n": 1, "temperature": 0.0, "max_tokens": 6}},
            "sharding": {"shard_size": 1}, "output_dir": str(out)}
    return AnnotateConfig.model_validate(deep_merge(base, extra))


def _check_placement(stats: list, n_nodes: int = 2) -> None:
    workers = {s.worker.pid: s.worker for s in stats}
    assert all(s.worker is not None and s.worker.gpu_ids for s in stats), [s.worker for s in stats]
    assert len({w.node_id for w in workers.values()}) == n_nodes  # the shards ran on both nodes
    # the pool's actors run side by side for the whole stage: no two share a GPU of a node
    seats = [(w.node_id, g) for w in workers.values() for g in w.gpu_ids]
    assert len(seats) == len(set(seats)), seats


def test_annotate_on_a_two_node_cluster(cluster, tiny_models, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):
        (folder / f"img_{i}.png").write_bytes(make_image_bytes(color=(30 * i, 90, 200), size=(64, 56 + 4 * i)))
    annotate(_annotate_cfg(tiny_models, folder, tmp_path / "local"))
    # transformers on device auto: each actor asks for 1 GPU (derived), 4 actors = every logical GPU of both nodes
    report = annotate(_annotate_cfg(tiny_models, folder, tmp_path / "ray",
                                    runner={"name": "ray", "num_workers": 4, "address": cluster.address}))
    assert report.n_ok == 8 and report.shards_done == 8
    cols = ["key", "status", "caption", "completion_tokens"]
    local = pl.read_parquet(str(tmp_path / "local" / "*.parquet")).select(cols).sort("key")
    remote = pl.read_parquet(str(tmp_path / "ray" / "*.parquet")).select(cols).sort("key")
    assert local.to_dicts() == remote.to_dicts()
    stats = RunDir(str(tmp_path / "ray"), AnnotationRow).read_stats()
    _check_placement(stats)
    nodes = status(str(tmp_path / "ray"))["nodes"]  # what `caprl annotate status` prints per node
    assert len(nodes) == 2 and sum(n["shards"] for n in nodes) == 8 and all(n["gpu_ids"] for n in nodes)
    shown = cli(["annotate", "status", tmp_path / "ray"], 0, "8 / 8", "shards per node").output
    assert shown.count(nodes[0]["host"]) >= 2  # one row per node (both raylets run on this host)


def test_curate_on_a_two_node_cluster_with_explicit_gpus(cluster, tmp_path: Path) -> None:
    scenes = write_scenes(tmp_path / "images", 8)
    manifest = tmp_path / "manifest.jsonl"
    import random

    rng = random.Random(0)
    manifest.write_text("".join(json.dumps({"path": f"images/{s.key}.png", "qa": s.mcqs(rng),
                                            "caption": s.caption()}) + "\n" for s in scenes))

    def cfg(out: Path, **extra) -> CurateConfig:
        base = {"input": {"path": str(manifest)}, "import_mode": "qa",
                "answer": {"backend": {"name": "lexical"}, "evidence": "caption"},
                "sharding": {"shard_size": 2}, "output_dir": str(out)}
        return CurateConfig.model_validate(deep_merge(base, extra))

    curate(cfg(tmp_path / "local"))
    # the lexical engine needs no GPU: runner.resources asks for one per worker anyway (the override)
    curate(cfg(tmp_path / "ray", runner={"name": "ray", "num_workers": 4, "address": cluster.address,
                                         "resources": {"num_gpus": 1}}))
    cols = ["key", "qa_index", "keep", "reason", "visual_acc", "text_acc"]
    a = pl.read_parquet(tmp_path / "local" / "dataset" / "audit.parquet").select(cols).sort(["key", "qa_index"])
    b = pl.read_parquet(tmp_path / "ray" / "dataset" / "audit.parquet").select(cols).sort(["key", "qa_index"])
    assert a.equals(b) and a["keep"].sum() > 0
    cfg_ray = cfg(tmp_path / "ray")
    answer_stats = stage_dir(cfg_ray, "answer").read_stats()
    assert len(answer_stats) == 4
    assert all(s.worker.gpu_ids for s in answer_stats)
    seats = {(s.worker.pid, s.worker.node_id, tuple(s.worker.gpu_ids)) for s in answer_stats}
    assert len({(n, g) for _, n, g in seats}) == len({p for p, _, _ in seats})  # one GPU per actor, none shared


def test_a_worker_needing_two_gpus_gets_a_bundle_on_one_node(cluster, tiny_models, tmp_path: Path) -> None:
    """A tensor-parallel-sized worker (2 GPUs, as a vllm engine with tensor_parallel_size 2 asks) gets a placement
    group of its own: both its GPUs on one node; two such workers fill both nodes."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        (folder / f"img_{i}.png").write_bytes(make_image_bytes(color=(50 * i, 80, 160), size=(64, 64)))
    annotate(_annotate_cfg(tiny_models, folder, tmp_path / "ray",
                           runner={"name": "ray", "num_workers": 2, "address": cluster.address,
                                   "resources": {"num_gpus": 2}}))
    stats = RunDir(str(tmp_path / "ray"), AnnotationRow).read_stats()
    assert len(stats) == 4 and all(sorted(s.worker.gpu_ids) == ["0", "1"] for s in stats)
    assert len({s.worker.node_id for s in stats}) == 2
    assert ray.is_initialized() is False  # the runner disconnected


def test_a_worker_no_node_can_hold_is_refused_at_once(cluster, tiny_models, tmp_path: Path) -> None:
    from caprl_kit.errors import CaprlError

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "img.png").write_bytes(make_image_bytes())
    with pytest.raises(CaprlError, match=r"needs 1 CPU and 4 GPU on one node; the largest node .* 2 GPU"):
        annotate(_annotate_cfg(tiny_models, folder, tmp_path / "ray",
                               runner={"name": "ray", "address": cluster.address, "resources": {"num_gpus": 4}}))


def test_a_worker_killed_mid_run_loses_nothing(cluster, tiny_models, tmp_path: Path) -> None:
    """SIGKILL one worker process (its pid taken from a shard it finished) while the run goes on: the shard it held
    is redone on the next free worker, Ray restarts the actor; the run finishes and every key is there exactly
    once."""
    import os
    import signal
    import threading
    import time

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(24):
        (folder / f"img_{i:02d}.png").write_bytes(make_image_bytes(color=(10 * i, 90, 200), size=(64, 64)))
    out = tmp_path / "ray"
    run_dir = RunDir(str(out), AnnotationRow)
    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            if out.exists():
                stats = run_dir.read_stats()
                if stats and len(stats) < 20:
                    killed.append(stats[0].worker.pid)
                    os.kill(killed[0], signal.SIGKILL)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    report = annotate(_annotate_cfg(tiny_models, folder, out, backend={"sampling": {"max_tokens": 24}},
                                    runner={"name": "ray", "num_workers": 2, "address": cluster.address}))
    killer.join(timeout=10)
    assert killed, "no worker was killed: the run ended before the first shard was seen"
    keys = run_dir.read_table().column("key").to_pylist()
    assert sorted(keys) == sorted(f"img_{i:02d}.png" for i in range(24))  # every key exactly once
    assert report.n_ok == 24
    pids = {s.worker.pid for s in run_dir.read_stats()}
    # the killed worker's shards stay (also one it committed on its writer thread but never reported); others
    # finished the run
    assert killed[0] in pids and len(pids) >= 2


def test_a_shard_committed_by_a_worker_that_died_before_reporting_it_is_kept_not_redone(cluster, tmp_path: Path):
    """The driver asks ``committed`` before it redoes a dead actor's shard: shard 1, committed and then its actor
    killed, is run once; the run ends with every shard's stats."""
    from caprl_kit.io.shards import iter_shards
    from caprl_kit.runners.ray import run_ray
    from caprl_kit.schemas.run import ShardStats

    folder = tmp_path / "shards"
    folder.mkdir()

    def _commit_then_die_worker(folder: str):
        """A worker that commits each shard (its stats sidecar in ``folder``) and counts its runs; on the first run of
        shard 1 its process dies right after the commit, before the result reaches the driver (as when the writer thread
        has committed and the actor is killed)."""
        import os

        from caprl_kit.schemas.run import ShardStats

        def work(spec, items):
            runs = Path(folder) / f"{spec.name}.runs"
            with runs.open("a") as fh:
                fh.write(f"{os.getpid()}\n")
            stats = ShardStats(shard_id=spec.shard_id, artifact="annotation/v1", n_items=len(items), n_ok=len(items),
                               n_failed=0, status_counts={"ok": len(items)}, errors={},
                               started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:00:01+00:00",
                               duration_s=1.0)
            (Path(folder) / f"{spec.name}_stats.json").write_text(stats.model_dump_json())
            if spec.shard_id == 1 and len(runs.read_text().splitlines()) == 1:
                os._exit(1)  # committed, never reported
            return stats

        return work

    def committed(shard_id: int):
        path = folder / f"{shard_id:05d}_stats.json"
        return ShardStats.model_validate_json(path.read_text()) if path.exists() else None

    written, skipped = run_ray(
        iter_shards(range(8), 2),
        lambda progress: _commit_then_die_worker(str(folder)),
        num_workers=2,
        address=cluster.address,
        committed=committed,
    )
    assert skipped == 0
    assert sorted(s.shard_id for s in written) == [0, 1, 2, 3]
    runs = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.runs")}
    assert runs == {"00000.runs": 1, "00001.runs": 1, "00002.runs": 1, "00003.runs": 1}
