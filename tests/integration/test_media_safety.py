"""caprl annotate on hostile inputs, with the tiny captioner: a FIFO, a byte-cap breach and a symlink loop in the
input folder, and a manifest entry pointing at /dev/zero, each end as one status row, fast, without a hang."""

from __future__ import annotations

import io
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.pipeline import run
from caprl_kit.config import deep_merge
from hang_guard import finishes_within
from media_factory import make_image_bytes

CAP = 20_000  # media.max_file_bytes for these runs: the noise image is over it, the flat ones far under


def config(tiny_models, inp: dict, out: Path, **extra) -> AnnotateConfig:
    data = {
        "input": inp,
        "backend": {"name": "transformers", "model": str(tiny_models["captioner"]), "batch_size": 4,
                    "sampling": {"n": 1, "max_tokens": 4, "seed": 0}},
        "media": {"max_file_bytes": CAP},
        "output_dir": str(out),
    }
    return AnnotateConfig.model_validate(deep_merge(data, extra))


def rows_by_key(out: Path) -> dict[str, dict]:
    return {r["key"]: r for r in pl.read_parquet(str(out / "*.parquet")).to_dicts()}


def noise_png(size: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_cap_and_symlink_loop_in_the_input_folder(tiny_models, tmp_path: Path) -> None:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    for i in range(2):
        (d / f"img_{i}.png").write_bytes(make_image_bytes(color=(90 * i, 100, 200)))
    (d / "sub" / "img_2.png").write_bytes(make_image_bytes(color=(10, 10, 10)))
    big = noise_png()
    assert len(big) > CAP
    (d / "big.png").write_bytes(big)
    fifo = d / "pipe.png"
    os.mkfifo(fifo)  # nobody ever writes: opening it for reading would block the job forever
    (d / "sub" / "loop").symlink_to("..")  # would list everything again, forever
    out = tmp_path / "out"
    report = finishes_within(300, lambda: run(config(tiny_models, {"path": str(d)}, out)), fifos=[fifo])
    rows = rows_by_key(out)
    assert sorted(rows) == ["big.png", "img_0.png", "img_1.png", "pipe.png", "sub/img_2.png"]  # each file once
    assert rows["pipe.png"]["status"] == "not_a_regular_file"
    assert "FIFO" in rows["pipe.png"]["error_message"] and rows["pipe.png"]["caption"] is None
    assert rows["big.png"]["status"] == "too_large"
    assert f"{len(big)} bytes" in rows["big.png"]["error_message"]
    assert f"media.max_file_bytes={CAP}" in rows["big.png"]["error_message"]
    assert all(rows[k]["status"] == "ok" for k in ("img_0.png", "img_1.png", "sub/img_2.png"))
    assert report.status_counts == {"ok": 3, "not_a_regular_file": 1, "too_large": 1}


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_manifest_entry_pointing_at_dev_zero_is_a_status_row(tiny_models, tmp_path: Path) -> None:
    (tmp_path / "good.png").write_bytes(make_image_bytes())
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps({"path": p}) for p in ["/dev/zero", "good.png", "/dev/null"]) + "\n")
    out = tmp_path / "out"
    cfg = config(tiny_models, {"path": str(manifest)}, out, media={"max_file_bytes": 1 << 30})
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    t0 = time.monotonic()
    report = finishes_within(300, lambda: run(cfg))
    took = time.monotonic() - t0
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    rows = rows_by_key(out)
    assert rows["/dev/zero"]["status"] == "not_a_regular_file"
    assert "character device" in rows["/dev/zero"]["error_message"]
    assert rows["/dev/null"]["status"] == "not_a_regular_file"
    assert rows["good.png"]["status"] == "ok"
    assert report.n_items == 3 and report.n_failed == 2
    # reading /dev/zero up to even the cap would add 1 GiB; the tiny model run itself adds far less
    assert grown_mib < 300, f"peak memory grew by {grown_mib:.0f} MiB"
    assert took < 120
