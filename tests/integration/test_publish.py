"""caprl annotate publish: a real annotate run (tiny captioner, n = 2) as a Hub-ready folder that
``datasets.load_dataset`` reads with the right rows, media and features; row groups cut by bytes across the run's
shards (a small byte target set here); the dataset card's front matter and body taken from the run; the refusals."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from media_factory import make_video_bytes
from PIL import Image
from typer.testing import CliRunner

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.pipeline import run
from caprl_kit.annotate.publish import PublishOptions, card_front_matter, publish
from caprl_kit.cli import app
from caprl_kit.errors import CaprlError

runner = CliRunner()
TARGET = 64_000  # bytes per row group: ~4 of the 12-17 kB noise images


def noise_png(seed: int, size: tuple[int, int]) -> bytes:
    """A PNG that does not compress: the row's bytes are its image's."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """Two annotate runs of one folder (9 images, a video, a broken file; shards of 3): one of the folder that
    stored its media, one of a manifest listing it that did not, carrying the manifest's ``image`` path and
    ``label`` columns."""
    root = tmp_path_factory.mktemp("publish")
    folder = root / "in"
    folder.mkdir()
    for i in range(9):
        (folder / f"img_{i}.png").write_bytes(noise_png(i, (64 + 4 * i, 64)))
    (folder / "clip.mp4").write_bytes(make_video_bytes(n_frames=12, fps=6))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    names = sorted(p.name for p in folder.iterdir())
    manifest = root / "manifest.jsonl"
    manifest.write_text(
        "".join(json.dumps({"key": n, "image": f"in/{n}", "label": f"label {n}"}) + "\n" for n in names)
    )
    listed = {"path": str(manifest), "key_column": "key", "path_column": "image", "carry_columns": ["image", "label"]}
    out = {}
    for name, embed, inp in (("embedded", True, {"path": str(folder)}), ("paths", False, listed)):
        cfg = AnnotateConfig.model_validate(
            {
                "input": inp,
                "backend": {
                    "name": "transformers",
                    "model": str(tiny_models["captioner"]),
                    "batch_size": 4,
                    "sampling": {"n": 2, "temperature": 1.0, "max_tokens": 6, "seed": 0},
                },
                "media": {"video_max_frames": 4},
                "sharding": {"shard_size": 3},
                "output": {"embed_media": embed},
                "output_dir": str(root / name),
            }
        )
        run(cfg)
        out[name] = root / name
    out["folder"] = folder
    return out


def row_groups(folder: Path) -> list[tuple[int, int]]:
    """(rows, uncompressed bytes) of every row group of the published files, in order."""
    out = []
    for f in sorted((folder / "data").glob("*.parquet")):
        meta = pq.ParquetFile(f).metadata
        out += [(meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups)]
    return out


def test_published_folder_loads_with_datasets_and_its_row_groups_are_cut_by_bytes(runs, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "hub"
    done = runner.invoke(
        app,
        [
            "annotate",
            "publish",
            str(runs["embedded"]),
            str(out),
            "--row-group-size",
            "64kB",
            "--file-size",
            "100kB",
            "--name",
            "tiny captions",
            "--repo-id",
            "me/tiny-captions",
        ],
    )
    assert done.exit_code == 0, done.output
    files = sorted(p.name for p in (out / "data").iterdir())
    assert len(files) > 1 and files[0] == f"train-00000-of-{len(files):05d}.parquet"
    groups = row_groups(out)
    assert sum(rows for rows, _ in groups) == 10  # 9 images + the video; the broken file is left out
    # by bytes, across shards: no group over the target but a single row larger than it alone, none one per shard
    assert all(size <= TARGET or rows == 1 for rows, size in groups), groups
    assert max(rows for rows, _ in groups) >= 2
    assert [rows for rows, _ in groups] != [2, 3, 3, 2]  # the run's shards hold 2, 3, 3 and 2 captioned items
    ds = datasets.load_dataset(str(out), split="train")
    assert ds.num_rows == 10
    assert isinstance(ds.features["image"], datasets.Image) and isinstance(ds.features["video"], datasets.Video)
    images = ds.filter(lambda kind: kind == "image", input_columns="media_type").select_columns(
        ["key", "image", "captions", "caption"]
    )  # the video column decodes only where torchcodec is installed
    assert images.num_rows == 9
    for row in images:
        i = int(row["key"].removeprefix("img_").removesuffix(".png"))
        assert row["image"].size == (64 + 4 * i, 64)  # the original bytes, decoded by the feature
        assert len(row["captions"]) == 2 and row["caption"] == row["captions"][0]
    # the card: the configs / features the loader and the viewer read, and the run's own numbers
    card = (out / "README.md").read_text()
    meta = card_front_matter(card)
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert {"name": "image", "dtype": "image"} in meta["dataset_info"]["features"]
    assert meta["dataset_info"]["splits"] == [
        {"name": "train", "num_bytes": sum(s for _, s in groups), "num_examples": 10}
    ]
    assert meta["pretty_name"] == "tiny captions"
    manifest = json.loads((runs["embedded"] / "run_manifest.json").read_text())
    for text in (
        "n=2, temperature=1.0",
        "Please describe this image in detail.",
        "| `failed_to_decode` | 1 |",
        "| truncated |",
        'load_dataset("me/tiny-captions"',
        f"| items in the run | {manifest['n_items']} |",
        "| rows published | 10 |",
    ):
        assert text in card, text


def test_media_read_from_the_sources_failed_rows_and_the_refusals(runs, tmp_path: Path) -> None:
    import datasets

    # a run that kept no media: none by default, the source files with embed_media
    plain = publish(str(runs["paths"]), str(tmp_path / "plain"))
    assert plain.media == "not embedded" and plain.rows == 10
    features = datasets.load_dataset(str(tmp_path / "plain"), split="train").features
    assert features["image"] == datasets.Value("string")  # no media: the manifest's carried path keeps its name
    read = publish(
        str(runs["paths"]),
        str(tmp_path / "read"),
        PublishOptions(embed_media=True, include_failed=True, row_group_bytes=TARGET),
    )
    assert read.media == "read from the sources" and read.rows == 11 and read.left_out == {}
    ds = datasets.load_dataset(str(tmp_path / "read"), split="train")
    assert {"label", "input_image"} <= set(ds.column_names)  # carried; the manifest's image path renamed
    by_key = {r["key"]: r for r in ds.select_columns(["key", "image", "status", "label", "input_image"])}
    assert by_key["img_3.png"]["label"] == "label img_3.png" and by_key["img_3.png"]["input_image"] == "in/img_3.png"
    assert "Carried from the input" in (tmp_path / "read" / "README.md").read_text()
    assert by_key["broken.jpg"]["status"] == "failed_to_decode" and by_key["broken.jpg"]["image"] is None
    assert by_key["img_3.png"]["image"].size == (76, 64)
    # an earlier publish is replaced only with --overwrite; a user's folder, a run dir and a non-run are refused
    with pytest.raises(CaprlError, match="already holds a published dataset"):
        publish(str(runs["paths"]), str(tmp_path / "plain"))
    again = publish(str(runs["paths"]), str(tmp_path / "plain"), PublishOptions(overwrite=True, include_failed=True))
    assert again.rows == 11
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(CaprlError, match="not a caprl run"):
        publish(str(runs["paths"]), str(mine))
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    with pytest.raises(CaprlError, match="holds a caprl annotate run"):
        publish(str(runs["paths"]), str(runs["embedded"]), PublishOptions(overwrite=True))
    assert (runs["embedded"] / "run_manifest.json").is_file()
    refused = runner.invoke(app, ["annotate", "publish", str(runs["folder"]), str(tmp_path / "x")])
    assert refused.exit_code == 2 and "not a caprl annotate run" in " ".join(refused.output.split()), refused.output
    bad = runner.invoke(
        app, ["annotate", "publish", str(runs["paths"]), str(tmp_path / "y"), "--row-group-size", "lots"]
    )
    assert bad.exit_code == 2 and "is not a size" in bad.output
