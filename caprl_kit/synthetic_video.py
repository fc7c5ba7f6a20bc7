"""Synthetic video task: one coloured shape that changes colour and moves at known times, with MCQs about what,
where and when.

Each clip lasts ``duration`` seconds: the shape (one of ``synthetic.SHAPES``) starts with one colour at one position
(``synthetic.COLORS`` x ``synthetic.POSITIONS``), turns another colour at one whole second and jumps to another
position at another whole second (both inside the clip, never at once). Five four-option MCQs per clip: the shape, the
colour at the start, the colour it turns, where it moves, and which happens first. The colour questions always offer
the other colour of the clip and the move question the start position, so a caption must say *when* a colour or
position holds, not only that it occurs. The complete reference caption is timestamped the CapRL++ way (``[mm:ss]``):

    [00:00] the object starts as a red circle at the left . [00:01] first the object turns blue .
    [00:03] then the object moves to the right .

The incomplete caption (what an SFT set would hold) states each of the start colour, the shape, the start position,
the colour change and the move with probability 1/2, always correctly (``first``/``then`` only when both events are
stated). Deterministic by seed; split by video; written as small H.264 files by PyAV.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from caprl_kit.synthetic import COLORS, POSITIONS, SHAPES, Scene, ShapeFact, draw

#: the words the video captions use beyond the image task's (appended to the tiny word-level vocabulary)
VIDEO_WORDS = ["starts", "as", "first", "then", "turns", "moves", "seconds", "<", ">"]
#: caption timestamps the tiny word-level tokenizer holds as whole tokens (clips of at most 10 s)
TIMESTAMP_TOKENS = [f"[00:0{s}]" for s in range(10)]
#: the options of the temporal question (the two events and two that never happen)
EVENTS = {"turn": "the object turns", "move": "the object moves"}
NEVER = ["the object grows", "the object spins"]


@dataclass(frozen=True)
class VideoFacts:
    """One clip: the shape, its two colours and positions, and the whole seconds at which it turns and moves."""

    key: str
    shape: str
    colors: tuple[str, str]
    positions: tuple[str, str]
    turn_at: int
    move_at: int
    duration: int

    def state_at(self, t: float) -> ShapeFact:
        """The shape as shown at ``t`` seconds."""
        return ShapeFact(
            self.shape,
            self.colors[t >= self.turn_at],
            self.positions[t >= self.move_at],
        )

    def events(self, turn: bool = True, move: bool = True) -> list[tuple[int, str]]:
        """The stated events (second, clause) in the order they happen, with first / then when both are stated."""
        out = []
        if turn:
            out.append((self.turn_at, f"the object turns {self.colors[1]}"))
        if move:
            out.append((self.move_at, f"the object moves to the {self.positions[1]}"))
        out.sort()
        if len(out) == 2:
            out = [(out[0][0], "first " + out[0][1]), (out[1][0], "then " + out[1][1])]
        return out

    def caption(self) -> str:
        """The complete timestamped reference caption (every fact stated)."""
        return self._caption(self.colors[0], self.shape, self.positions[0], True, True)

    def _caption(self, color: str, shape: str, where: str, turn: bool, move: bool) -> str:
        start = f"[00:00] the object starts as a {color + ' ' if color else ''}{shape}"
        start += f" at the {where} ." if where else " ."
        return " ".join([start, *(f"{stamp(t)} {clause} ." for t, clause in self.events(turn, move))])

    def incomplete_caption(self, rng: random.Random) -> str:
        """A correct but incomplete caption: each of the start colour, the shape, the start position, the colour
        change and the move stated with probability 1/2."""
        color = self.colors[0] if rng.random() < 0.5 else ""
        shape = self.shape if rng.random() < 0.5 else "shape"
        where = self.positions[0] if rng.random() < 0.5 else ""
        return self._caption(color, shape, where, rng.random() < 0.5, rng.random() < 0.5)

    def mcqs(self, rng: random.Random) -> list[dict]:
        first = "turn" if self.turn_at < self.move_at else "move"
        asks = [
            ("What shape is the object?", self.shape, [s for s in SHAPES if s != self.shape], []),
            ("What color is the object at the start?", self.colors[0], _others(COLORS, self.colors), [self.colors[1]]),
            ("What color does the object turn?", self.colors[1], _others(COLORS, self.colors), [self.colors[0]]),
            ("Where does the object move?", self.positions[1], _others(POSITIONS, self.positions), [self.positions[0]]),
            ("What happens first?", EVENTS[first], [EVENTS[k] for k in EVENTS if k != first] + NEVER, []),
        ]
        out = []
        for question, truth, pool, always in asks:
            options = [*always, *rng.sample(pool, 3 - len(always)), truth]
            rng.shuffle(options)
            out.append(
                {
                    "question": question,
                    "choices": [f"{'ABCD'[i]}) {o}" for i, o in enumerate(options)],
                    "answer": "ABCD"[options.index(truth)],
                }
            )
        return out


def _others(pool: object, used: tuple[str, str]) -> list[str]:
    return [x for x in pool if x not in used]  # type: ignore[attr-defined]  # a dict or list of names


def stamp(second: int) -> str:
    """``[mm:ss]`` of a whole second."""
    return f"[{second // 60:02d}:{second % 60:02d}]"


def make_clip(key: str, rng: random.Random, duration: int = 4) -> VideoFacts:
    """A random clip: two distinct colours and positions, the turn and the move at distinct whole seconds."""
    turn_at, move_at = rng.sample(range(1, duration), 2)
    return VideoFacts(
        key,
        rng.choice(SHAPES),
        tuple(rng.sample(list(COLORS), 2)),  # type: ignore[arg-type]  # two of them
        tuple(rng.sample(list(POSITIONS), 2)),  # type: ignore[arg-type]
        turn_at,
        move_at,
        duration,
    )


def frames(clip: VideoFacts, fps: int, size: int) -> list[Image.Image]:
    """Every frame of the clip at ``fps``."""
    return [draw(Scene(clip.key, [clip.state_at(i / fps)]), size) for i in range(clip.duration * fps)]


def encode_video(images: list[Image.Image], fps: int, path: Path) -> None:
    """``images`` as an H.264 MP4 (lossless luma, every frame a keyframe: tiny files that decode exactly)."""
    import av
    import numpy as np

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "0", "g": "1"})
        stream.width, stream.height = images[0].size
        stream.pix_fmt = "yuv420p"
        for im in images:
            frame = av.VideoFrame.from_ndarray(np.asarray(im.convert("RGB")), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_video_task(
    out_dir: str | Path,
    n_train: int = 200,
    n_val: int = 50,
    n_test: int = 50,
    seed: int = 0,
    size: int = 84,
    duration: int = 4,
    fps: int = 4,
) -> dict[str, Path]:
    """The synthetic video task split by video into train/val/test, each with a JSONL manifest of ``path``
    (``videos/clip_NNNNN.mp4``), ``qa`` (the five MCQs), ``caption`` (complete, timestamped) and
    ``caption_incomplete``; the manifests feed ``caprl curate`` (import mode). Each split is written under a temporary
    name and renamed when complete."""
    from caprl_kit.errors import ConfigError, ConfigIssue
    from caprl_kit.io.fs import staged_dir

    issues = [
        ConfigIssue(name, f"must be an integer >= {low}, got {value!r}")
        for name, value, low in (
            ("n_train", n_train, 0),
            ("n_val", n_val, 0),
            ("n_test", n_test, 0),
            ("seed", seed, 0),
            ("size", size, 28),
            ("duration", duration, 3),
            ("fps", fps, 1),
        )
        if not isinstance(value, int) or isinstance(value, bool) or value < low
    ]
    if isinstance(duration, int) and duration > len(TIMESTAMP_TOKENS):
        issues.append(ConfigIssue("duration", f"must be <= {len(TIMESTAMP_TOKENS)} s, got {duration}"))
    if isinstance(size, int) and size % 2:
        issues.append(ConfigIssue("size", f"must be even (H.264 4:2:0), got {size}"))
    if issues:
        raise ConfigError(issues)
    out = Path(out_dir)
    rng = random.Random(seed)
    manifests = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        with staged_dir(out / split) as tmp:
            (tmp / "videos").mkdir(parents=True)
            lines = []
            for i in range(n):
                clip = make_clip(f"clip_{i:05d}", rng, duration)
                encode_video(frames(clip, fps, size), fps, tmp / "videos" / f"{clip.key}.mp4")
                row = {
                    "path": f"videos/{clip.key}.mp4",
                    "qa": clip.mcqs(rng),
                    "caption": clip.caption(),
                    "caption_incomplete": clip.incomplete_caption(rng),
                }
                lines.append(json.dumps(row) + "\n")
            (tmp / "manifest.jsonl").write_text("".join(lines))
        manifests[split] = out / split / "manifest.jsonl"
    return manifests
