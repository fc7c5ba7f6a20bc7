"""The synthetic sanity task: deterministic, split by image, incomplete captions that are always correct."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

from caprl_kit.backends.lexical import answer
from caprl_kit.synthetic import incomplete_caption, make_scene, write_sanity_task


def test_splits_questions_and_captions(tmp_path: Path) -> None:
    manifests = write_sanity_task(tmp_path, n_train=6, n_val=3, n_test=3, seed=1)
    rows = {k: [json.loads(x) for x in v.read_text().splitlines()] for k, v in manifests.items()}
    assert [len(rows[k]) for k in ("train", "val", "test")] == [6, 3, 3]
    for split, rs in rows.items():
        for r in rs:
            assert (tmp_path / split / r["path"]).is_file()
            assert 1 <= len(r["qa"]) <= 3 and all(len(q["choices"]) == 4 for q in r["qa"])
            # the complete caption answers every question (lexical oracle)
            for q in r["qa"]:
                opts = [(c[0], c[3:]) for c in q["choices"]]
                assert answer(r["caption"], q["question"], opts) == q["answer"]
    assert Image.open(tmp_path / "train" / rows["train"][0]["path"]).size == (84, 84)
    again = write_sanity_task(tmp_path / "again", n_train=6, n_val=3, n_test=3, seed=1)
    assert again["train"].read_text() == manifests["train"].read_text()


def test_incomplete_captions_never_lie() -> None:
    rng = random.Random(0)
    for i in range(50):
        scene = make_scene(f"s{i}", rng, max_shapes=1)
        cap = incomplete_caption(scene, rng)
        f = scene.facts[0]
        words = set(cap.rstrip(".").split())
        assert words <= {"The", "object", "is", "a", "shape", "at", "the", f.color, f.shape, f.position}
    for i in range(50):
        scene = make_scene(f"s{i}", rng, max_shapes=3)
        if len(scene.facts) == 1:
            continue
        cap = incomplete_caption(scene, rng)
        for f in scene.facts:
            assert f.shape in cap
            for other in scene.facts:
                if other is not f:
                    assert f"{other.color} {f.shape}" not in cap or other.color == f.color
