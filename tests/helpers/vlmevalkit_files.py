"""Tiny video benchmarks in the files VLMEvalKit reads for the CapRL++ video evaluation (spec §5.2), written by the
tests: Video-MME.tsv, MVBench.tsv, MMVU's data/validation.json, MMBench-Video.tsv, TOMATO.tsv and TimeLens-Bench's
charades-timelens.json, each with its videos where VLMEvalKit keeps them (tiny clips from ``make_video_bytes``).

``write_all(root)`` -> {layout: (benchmark file, {video's path relative to root: caption})}: the captions name the
answer of some questions and not of others, so the lexical answerer's scores are known (``EXPECTED``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from media_factory import make_video_bytes


def _video(path: Path, n_frames: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(make_video_bytes(n_frames=n_frames, fps=4))


def _tsv(path: Path, rows: list[dict]) -> None:
    """As pandas ``to_csv(sep='\\t', index=False)`` writes it (quoted where a field needs it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def video_mme(root: Path) -> tuple[Path, dict[str, str]]:
    base = root / "Video-MME"
    rows = [
        ("v_short", "short", "Knowledge", "Attribute Perception", "What color is the car?",
         ["A. red", "B. blue", "C. green", "D. black"], "A"),
        ("v_medium", "medium", "Sports Competition", "Object Recognition", "Which animal runs?",
         ["A. a cat", "B. a dog", "C. a horse", "D. a bird"], "B"),
        ("v_long", "long", "Life Record", "Attribute Perception", "What is the weather like?",
         ["A. sunny", "B. rainy", "C. snowy", "D. foggy"], "C"),
        ("v_long", "long", "Life Record", "Counting Problem", "How many people are there?",
         ["A. one", "B. two", "C. three", "D. four"], "A"),
    ]
    out = []
    for i, (video, duration, domain, task, question, candidates, answer) in enumerate(rows):
        _video(base / "video" / f"{video}.mp4")
        out.append({"index": i, "video": video, "video_path": f"./video/{video}.mp4", "duration": duration,
                    "domain": domain, "candidates": str(candidates), "sub_category": "Daily Life",
                    "task_type": task, "subtitle_path": f"./subtitle/{video}.srt", "question": question,
                    "answer": answer})
    _tsv(base / "Video-MME.tsv", out)
    captions = {"Video-MME/video/v_short.mp4": "A red car drives along the road.",
                "Video-MME/video/v_medium.mp4": "A dog runs across a field.",
                "Video-MME/video/v_long.mp4": "The weather is snowy. Two people walk in the snow."}
    return base / "Video-MME.tsv", captions


def mvbench(root: Path) -> tuple[Path, dict[str, str]]:
    base = root / "MVBench"
    rows = [
        ("Moving Direction", "video/clevrer/video_validation/", "video_10.mp4", "Which direction does the cube move?",
         ["left", "right", "up"], "left"),
        ("Action Sequence", "video/star/Charades_v1_480/", "ABC12.mp4", "What did the person do first?",
         ["opened the door", "sat on the chair"], "sat on the chair"),
    ]
    out = []
    for i, (task, prefix, video, question, candidates, answer) in enumerate(rows):
        _video(base / prefix / video)
        out.append({"task_type": task, "prefix": prefix, "data_type": "video", "bound": False, "start": "",
                    "end": "", "video": video, "question": question, "answer": answer,
                    "candidates": str(candidates), "index": i})
    _tsv(base / "MVBench.tsv", out)
    captions = {"MVBench/video/clevrer/video_validation/video_10.mp4": "The cube moves to the left.",
                "MVBench/video/star/Charades_v1_480/ABC12.mp4": "The person opened the door of the room."}
    return base / "MVBench.tsv", captions


def mmvu(root: Path) -> tuple[Path, dict[str, str]]:
    base = root / "MMVU"
    url = "https://huggingface.co/datasets/yale-nlp/MMVU/resolve/main/videos"
    rows = [
        {"id": "mmvu_0", "video": f"{url}/Biology/0.mp4", "question": "Which organ is shown?",
         "choices": {"A": "the heart", "B": "the lung", "C": "the liver", "D": "the kidney", "E": "the brain"},
         "answer": "A", "question_type": "multiple-choice", "metadata": {"subject": "Biology", "textbook": "x"}},
        {"id": "mmvu_1", "video": f"{url}/Physics/1.mp4", "question": "What force pulls the ball down?",
         "choices": {}, "answer": "gravity", "question_type": "open-ended",
         "metadata": {"subject": "Physics", "textbook": "y"}},
        {"id": "mmvu_2", "video": f"{url}/Physics/1.mp4", "question": "What shape does the ball have?",
         "choices": {}, "answer": "round", "question_type": "open-ended",
         "metadata": {"subject": "Physics", "textbook": "y"}},
    ]
    _video(base / "videos" / "Biology" / "0.mp4")
    _video(base / "videos" / "Physics" / "1.mp4")
    (base / "data").mkdir(parents=True, exist_ok=True)
    (base / "data" / "validation.json").write_text(json.dumps(rows))
    captions = {"MMVU/videos/Biology/0.mp4": "The organ shown is the heart, beating.",
                "MMVU/videos/Physics/1.mp4": "A round ball falls to the ground."}
    return base / "data" / "validation.json", captions


def mmbench_video(root: Path) -> tuple[Path, dict[str, str]]:
    base = root / "MMBench-Video"
    rows = [
        {"index": 0, "video": "vid_a", "video_path": "./video/vid_a.mp4", "question": "What is the man holding?",
         "answer": "A red umbrella.", "dimensions": str(["Object Recognition"])},
        {"index": 1, "video": "vid_a", "video_path": "./video/vid_a.mp4", "question": "Why does the man smile?",
         "answer": "He won a prize.", "dimensions": str(["Causal Reasoning", "Human Motion"])},
    ]
    _video(base / "video" / "vid_a.mp4")
    _tsv(base / "MMBench-Video.tsv", rows)
    return base / "MMBench-Video.tsv", {"MMBench-Video/video/vid_a.mp4": "A man holds a red umbrella and smiles."}


def tomato(root: Path) -> tuple[Path, dict[str, str]]:
    base = root / "TOMATO"
    rows = [
        {"id": "count:0", "key": "clap_01", "task": "count", "motion_type": "count",
         "question_type": "multiple-choice", "question": "How many times does the person clap?",
         "choices": json.dumps({"A": "1", "B": "2", "C": "3", "D": "4"}), "answer": "B",
         "video": "videos/human/clap_01.mp4", "demonstration_type": "human", "index": 0},
        {"id": "direction:0", "key": "ball_02", "task": "direction", "motion_type": "direction",
         "question_type": "multiple-choice", "question": "Which way does the ball roll?",
         "choices": json.dumps({"A": "left", "B": "right"}), "answer": "B",
         "video": "videos/object/ball_02.mp4", "demonstration_type": "object", "index": 1},
    ]
    _video(base / "videos" / "human" / "clap_01.mp4")
    _video(base / "videos" / "object" / "ball_02.mp4")
    _tsv(base / "TOMATO.tsv", rows)
    captions = {"TOMATO/videos/human/clap_01.mp4": "The person claps 3 times.",
                "TOMATO/videos/object/ball_02.mp4": "The ball rolls right."}
    return base / "TOMATO.tsv", captions


def timelens(root: Path) -> tuple[Path, dict[str, str]]:
    base = root / "TimeLens-Bench"
    _video(base / "videos" / "charades" / "AB12C.mp4", n_frames=12)
    (base / "charades-timelens.json").write_text(json.dumps({
        "AB12C": {"duration": 3.0, "spans": [[0.5, 1.5], [1.0, 2.0]],
                  "queries": ["A person opens a door.", "A person  sits down."]}}))
    return base / "charades-timelens.json", {
        "TimeLens-Bench/videos/charades/AB12C.mp4": "0.5 - 1.5 seconds: a person opens a door."}


WRITERS = {"videomme": video_mme, "mvbench": mvbench, "mmvu": mmvu, "mmbench_video": mmbench_video,
           "tomato": tomato, "timelens": timelens}

#: the videos each layout's loader must find (relative to the fixture root), in sample order
VIDEOS = {
    "videomme": ["Video-MME/video/v_short.mp4", "Video-MME/video/v_medium.mp4", "Video-MME/video/v_long.mp4"],
    "mvbench": ["MVBench/video/clevrer/video_validation/video_10.mp4", "MVBench/video/star/Charades_v1_480/ABC12.mp4"],
    "mmvu": ["MMVU/videos/Biology/0.mp4", "MMVU/videos/Physics/1.mp4"],
    "mmbench_video": ["MMBench-Video/video/vid_a.mp4"],
    "tomato": ["TOMATO/videos/human/clap_01.mp4", "TOMATO/videos/object/ball_02.mp4"],
    "timelens": ["TimeLens-Bench/videos/charades/AB12C.mp4"],
}


def write_all(root: Path) -> dict[str, tuple[Path, dict[str, str]]]:
    return {layout: write(root) for layout, write in WRITERS.items()}


def captions_file(root: Path, files: dict[str, tuple[Path, dict[str, str]]], path: Path) -> Path:
    """A CapRL-Video-178K style captions file ({"video", "caption"} rows, relative to ``root``) of every fixture."""
    lines = [{"video": video, "caption": caption} for _, captions in files.values() for video, caption in
             captions.items()]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path
