"""The synthetic video task: deterministic clips whose frames show what the captions and MCQs say, when they say
it; incomplete captions that are always correct."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from caprl_kit.backends.lexical import answer
from caprl_kit.errors import ConfigError
from caprl_kit.io.media import load_video
from caprl_kit.rewards.timestamp_format import timestamp_format_score
from caprl_kit.synthetic import COLORS, POSITIONS
from caprl_kit.synthetic_video import make_clip, write_video_task


def test_complete_captions_answer_every_question_and_are_well_timestamped() -> None:
    rng = random.Random(0)
    for i in range(200):
        clip = make_clip(f"c{i}", rng)
        caption = clip.caption()
        assert timestamp_format_score(caption) == 1.0
        for q in clip.mcqs(rng):
            opts = [(c[0], c[3:]) for c in q["choices"]]
            assert answer(caption, q["question"], opts) == q["answer"], (caption, q)
        # the colour and move questions offer the clip's other colour / position: when matters
        start, turn, move = (q["choices"] for q in clip.mcqs(rng)[1:4])
        assert any(clip.colors[1] in c for c in start) and any(clip.colors[0] in c for c in turn)
        assert any(clip.positions[0] in c for c in move)


def test_incomplete_captions_never_lie() -> None:
    rng = random.Random(1)
    for i in range(200):
        clip = make_clip(f"c{i}", rng)
        cap = clip.incomplete_caption(rng)
        assert timestamp_format_score(cap) == 1.0
        start = re.match(r"\[00:00\] the object starts as a (?:(\w+) )?(\w+)(?: at the (\w+))? \.", cap)
        assert start, cap
        color, shape, where = start.groups()
        assert color in (None, clip.colors[0]) and shape in ("shape", clip.shape)
        assert where in (None, clip.positions[0])
        for second, verb, what in re.findall(r"\[00:0(\d)\] (?:first |then )?the object (turns|moves) (?:to the )?(\w+)", cap):
            assert (int(second), what) == ((clip.turn_at, clip.colors[1]) if verb == "turns" else (clip.move_at, clip.positions[1]))
        if "first" in cap:  # said only with both events, in the order they happen
            assert cap.index("first") < cap.index("then")


def test_the_videos_show_the_facts_at_their_times(tmp_path: Path) -> None:
    manifests = write_video_task(tmp_path, n_train=3, n_val=1, n_test=1, seed=3, size=56)
    rows = [json.loads(x) for x in manifests["train"].read_text().splitlines()]
    assert [len(json.loads(x)["qa"]) for x in manifests["val"].read_text().splitlines()] == [5]
    again = write_video_task(tmp_path / "again", n_train=3, n_val=1, n_test=1, seed=3, size=56)
    assert again["train"].read_text() == manifests["train"].read_text()
    for row in rows:
        clip = load_video(tmp_path / "train" / row["path"], fps=1.0, min_frames=4, max_frames=4)
        assert clip.timestamps == [0.5, 1.5, 2.5, 3.5] and clip.frames[0].size == (56, 56)
        turn_at, move_at = _event_seconds(row["caption"])
        start_color = re.search(r"starts as a (\w+)", row["caption"]).group(1)
        new_color = re.search(r"turns (\w+)", row["caption"]).group(1)
        start_at = re.search(r"at the (\w+) \.", row["caption"]).group(1)
        new_at = re.search(r"moves to the (\w+)", row["caption"]).group(1)
        for frame, t in zip(clip.frames, clip.timestamps):
            where = new_at if t >= move_at else start_at
            x, y = (int(56 * v) for v in POSITIONS[where])
            want = COLORS[new_color if t >= turn_at else start_color]
            assert max(abs(a - b) for a, b in zip(frame.getpixel((x, y)), want)) < 40, (row, t)


def _event_seconds(caption: str) -> tuple[int, int]:
    turn = int(re.search(r"\[00:0(\d)\] (?:first |then )?the object turns", caption).group(1))
    move = int(re.search(r"\[00:0(\d)\] (?:first |then )?the object moves", caption).group(1))
    return turn, move


def test_bad_task_options_are_one_message() -> None:
    with pytest.raises(ConfigError) as err:
        write_video_task("unused", n_train=-1, size=57, duration=11)
    assert {i.path for i in err.value.issues} == {"n_train", "size", "duration"}
