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
        bare = incomplete_caption(scene, rng, placeholder=False)  # what it leaves out it does not name
        assert set(bare.rstrip(".").split()) <= {"The", "object", "is", "a", "there", "at", "the", f.color, f.shape,
                                                  f.position}
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


def test_false_statements_in_the_warm_start_captions(tmp_path) -> None:
    """false_share: that share of the incomplete captions ends in a sentence about a shape the scene lacks; the
    task is otherwise the same (false_share 0 writes the scenes, questions and captions it always wrote)."""
    import json

    from caprl_kit.synthetic import write_sanity_task

    plain = write_sanity_task(tmp_path / "plain", n_train=80, n_val=0, n_test=0, seed=3)
    lies = write_sanity_task(tmp_path / "lies", n_train=80, n_val=0, n_test=0, seed=3, false_share=0.5)
    a = [json.loads(x) for x in plain["train"].read_text().splitlines()]
    b = [json.loads(x) for x in lies["train"].read_text().splitlines()]
    assert [r["qa"] for r in a] == [r["qa"] for r in b] and [r["caption"] for r in a] == [r["caption"] for r in b]
    assert not any(r["has_false_statement"] for r in a)
    lying = [r for r in b if r["has_false_statement"]]
    assert 25 <= len(lying) <= 55
    for ra, rb in zip(a, b):
        if rb["has_false_statement"]:
            head, _, lie = rb["caption_incomplete"].partition(" A ")
            assert head == ra["caption_incomplete"] and lie.endswith(" is in the background.")
            assert lie.split()[1] not in rb["caption"]  # a shape the scene does not have
        else:
            assert rb["caption_incomplete"] == ra["caption_incomplete"]
