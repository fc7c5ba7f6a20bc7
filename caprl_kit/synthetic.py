"""Synthetic sanity data: images of coloured shapes with known facts, and MCQs about them.

Each scene has 1-3 shapes (distinct shapes) with a colour and a position (6 colours x 4 shapes x 4 positions).
A one-shape scene ("the object") gets questions about its colour, shape and position; a several-shape scene gets
questions about each shape's colour and position. Four options each, the answer letter, in the canonical layout
(``"A) red"``). The data is deterministic by seed, so demos and tests can reason about exact answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 30),
    "purple": (140, 50, 170),
    "orange": (245, 140, 20),
}
SHAPES = ["circle", "square", "triangle", "star"]
POSITIONS = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.22), "bottom": (0.5, 0.78)}


@dataclass(frozen=True)
class ShapeFact:
    shape: str
    color: str
    position: str


@dataclass
class Scene:
    key: str
    facts: list[ShapeFact]

    def caption(self) -> str:
        """The complete reference caption (every fact stated)."""
        if len(self.facts) == 1:
            f = self.facts[0]
            return f"The object is a {f.color} {f.shape} at the {f.position}."
        return " ".join(f"A {f.color} {f.shape} at the {f.position}." for f in self.facts)

    def mcqs(self, rng: random.Random) -> list[dict]:
        if len(self.facts) == 1:
            f = self.facts[0]
            asks = [
                ("What color is the object?", f.color, list(COLORS)),
                ("What shape is the object?", f.shape, SHAPES),
                ("Where is the object?", f.position, list(POSITIONS)),
            ]
        else:
            asks = [
                q
                for f in self.facts
                for q in (
                    (f"What color is the {f.shape}?", f.color, list(COLORS)),
                    (f"Where is the {f.shape}?", f.position, list(POSITIONS)),
                )
            ]
        out = []
        for question, truth, pool in asks:
            options = [*rng.sample([x for x in pool if x != truth], 3), truth]
            rng.shuffle(options)
            out.append(
                {
                    "question": question,
                    "choices": [f"{'ABCD'[i]}) {o}" for i, o in enumerate(options)],
                    "answer": "ABCD"[options.index(truth)],
                }
            )
        return out


def make_scene(key: str, rng: random.Random, max_shapes: int = 3) -> Scene:
    n = rng.randint(1, max_shapes)
    shapes = rng.sample(SHAPES, n)
    positions = rng.sample(list(POSITIONS), n)
    return Scene(key, [ShapeFact(s, rng.choice(list(COLORS)), p) for s, p in zip(shapes, positions)])


def draw(scene: Scene, size: int = 112) -> Image.Image:
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    r = size // 7
    for f in scene.facts:
        cx, cy = (int(size * v) for v in POSITIONS[f.position])
        color = COLORS[f.color]
        if f.shape == "circle":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        elif f.shape == "square":
            d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=color)
        elif f.shape == "triangle":
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
        else:
            d.regular_polygon((cx, cy, r), n_sides=5, rotation=90, fill=color)
            d.polygon([(cx - r, cy), (cx + r, cy), (cx, cy + r // 2)], fill=color)
    return img


def write_scenes(out_dir: str | Path, n: int, seed: int = 0, size: int = 112, max_shapes: int = 3) -> list[Scene]:
    """Write ``n`` scene PNGs to ``out_dir`` (``scene_00000.png`` ...) and return their scenes."""
    rng = random.Random(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scenes = []
    for i in range(n):
        scene = make_scene(f"scene_{i:05d}", rng, max_shapes)
        draw(scene, size).save(out / f"{scene.key}.png")
        scenes.append(scene)
    return scenes


def incomplete_caption(scene: Scene, rng: random.Random, placeholder: bool = True) -> str:
    """A correct but incomplete caption: every shape is named, each of its colour and position only sometimes —
    like real SFT captions, which omit details. A one-shape scene states each of colour, shape and position
    with probability 1/2; a shape it leaves out is "shape" (``placeholder``: "The object is a red shape.") or not
    named at all ("The object is red at the left.", "The object is there."), so that every word a claim checker
    reads is true of the image."""
    if len(scene.facts) == 1:
        f = scene.facts[0]
        color = f.color if rng.random() < 0.5 else ""
        shape = f.shape if rng.random() < 0.5 else ("shape" if placeholder else "")
        where = f"at the {f.position}" if rng.random() < 0.5 else ""
        if shape:
            return "The object is a " + " ".join(x for x in (color, shape, where) if x) + "."
        return "The object is " + (" ".join(x for x in (color, where) if x) or "there") + "."
    parts = []
    for f in scene.facts:
        color = f"{f.color} " if rng.random() < 0.5 else ""
        where = f" at the {f.position}" if rng.random() < 0.5 else ""
        parts.append(f"A {color}{f.shape}{where}.")
    return " ".join(parts)


def false_statement(scene: Scene) -> str:
    """A false sentence about the scene: the first shape's colour on the next shape (in ``SHAPES`` order) that the
    scene does not hold, "in the background" ("A red square is in the background." beside a red circle). No question
    asks about it, so the QA reward cannot see it; a claim checker can. It is a function of the image, as a model's
    learned hallucination is (an object it duplicates), not noise a warm start would have to fit; every word is in
    the tiny models' vocabulary.

    >>> false_statement(Scene("s", [ShapeFact("circle", "red", "left")]))
    'A red square is in the background.'
    >>> false_statement(Scene("s", [ShapeFact("star", "blue", "top"), ShapeFact("circle", "red", "left")]))
    'A blue square is in the background.'
    """
    first, held = scene.facts[0], {f.shape for f in scene.facts}
    i = SHAPES.index(first.shape)
    shape = next(s for s in SHAPES[i + 1 :] + SHAPES[:i] if s not in held)
    return f"A {first.color} {shape} is in the background."


def write_sanity_task(
    out_dir: str | Path,
    n_train: int = 200,
    n_val: int = 50,
    n_test: int = 50,
    seed: int = 0,
    questions_per_image: int = 3,
    size: int = 84,
    max_shapes: int = 1,
    false_share: float = 0.0,
    placeholder: bool = True,
) -> dict[str, Path]:
    """The synthetic sanity task: scenes (one shape each by default) split by image into train/val/test, each
    with a JSONL manifest of ``path``, ``qa`` (up to ``questions_per_image`` four-option MCQs), ``caption``
    (complete) and ``caption_incomplete`` (what an SFT set would hold: true but incomplete, and with probability
    ``false_share`` ending in a ``false_statement``, marked ``has_false_statement``, so a warm start learns to
    hallucinate; ``placeholder``: see ``incomplete_caption``). Feed the manifests to ``caprl curate`` (import mode). Each split is written under a temporary
    name and renamed when complete, so a killed run leaves no split that looks finished."""
    import json

    from caprl_kit.io.fs import staged_dir

    check_task_options(
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        seed=seed,
        questions_per_image=questions_per_image,
        size=size,
        max_shapes=max_shapes,
    )
    if not 0.0 <= false_share <= 1.0:
        from caprl_kit.errors import ConfigError, ConfigIssue

        raise ConfigError([ConfigIssue("false_share", f"must be within [0, 1], got {false_share!r}")])
    out = Path(out_dir)
    rng = random.Random(seed)
    lies = random.Random(seed + 7919)  # its own draws: false_share=0 leaves the task as it always was
    manifests = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        with staged_dir(out / split) as tmp:
            scenes = write_scenes(tmp / "images", n, seed=rng.randrange(1 << 30), size=size, max_shapes=max_shapes)
            lines = []
            for s in scenes:
                qa = s.mcqs(rng)
                rng.shuffle(qa)
                incomplete = incomplete_caption(s, rng, placeholder)
                lie = false_share > 0 and lies.random() < false_share
                if lie:
                    incomplete += " " + false_statement(s)
                lines.append(
                    json.dumps(
                        {
                            "path": f"images/{s.key}.png",
                            "qa": qa[:questions_per_image],
                            "caption": s.caption(),
                            "caption_incomplete": incomplete,
                            "has_false_statement": lie,
                        }
                    )
                )
            (tmp / "manifest.jsonl").write_text("".join(line + "\n" for line in lines))
        manifests[split] = out / split / "manifest.jsonl"
    return manifests


def check_task_options(**options: int) -> None:
    """Counts are non-negative integers; sizes, questions and shapes positive (shapes at most len(SHAPES))."""
    from caprl_kit.errors import ConfigError, ConfigIssue

    lowest = {"n_train": 0, "n_val": 0, "n_test": 0, "seed": 0, "questions_per_image": 1, "size": 8, "max_shapes": 1}
    issues = []
    for name, value in options.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest[name]:
            issues.append(ConfigIssue(name, f"must be an integer >= {lowest[name]}, got {value!r}"))
    if isinstance(options.get("max_shapes"), int) and options["max_shapes"] > len(SHAPES):
        issues.append(
            ConfigIssue("max_shapes", f"must be <= {len(SHAPES)} (distinct shapes), got {options['max_shapes']}")
        )
    if issues:
        raise ConfigError(issues)
