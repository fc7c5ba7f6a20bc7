"""A few rows of the official CapRL datasets in their published layouts (spec §1.7), written by the tests:
CapRL-QA-75K (Parquet: hex ``id``, one HF Image struct in ``image``, choices "A) text") and CapRL-Video-QA-20K
(JSONL: ``videos`` relative to the LLaVA-Video-178K root, choices "A. text"); and the output folder of the official
``gen_qa.py`` (spec §1.2: one ``part_{id}.jsonl`` per parallel part, ``{"qa_response", "image_path"}`` per line,
beside its ``progress_part_{id}.jsonl`` resume files)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from caprl_kit.synthetic import write_scenes
from media_factory import make_video_bytes

IMAGE_PROMPT = "<image> Please describe this image in detail."
VIDEO_PROMPT = ("<video>\nYou are a video captioner. Describe this video in strictly chronological order and in "
                "great detail.")


def write_qa75k(path: Path, n: int = 4) -> Path:
    """``train-00000-of-00001.parquet`` with ``n`` synthetic scenes, as the published file lays them out."""
    scenes = write_scenes(path.parent / "_scenes", n)
    rows = []
    for s in scenes:
        fact = s.facts[0]
        others = [c for c in ("red", "green", "blue", "yellow") if c != fact.color][:3]
        choices = [f"{label}) {text}" for label, text in zip("ABCD", [*others[:2], fact.color, others[2]])]
        rows.append({
            "id": hashlib.sha1(s.key.encode()).hexdigest()[:24],
            "image": {"bytes": (path.parent / "_scenes" / f"{s.key}.png").read_bytes(), "path": None},
            "prompt": [{"role": "user", "content": IMAGE_PROMPT}],
            "data_source": "image_caption_rl",
            "reward_model": {"ground_truth": [{"question": f"What color is the {fact.shape}?", "choices": choices,
                                               "answer": "C"}], "style": "rule"},
        })
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("id", pa.string()), ("image", image),
                        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
                        ("data_source", pa.string()),
                        ("reward_model", pa.struct([("ground_truth", pa.list_(pa.struct([
                            ("question", pa.string()), ("choices", pa.list_(pa.string())), ("answer", pa.string())]))),
                            ("style", pa.string())]))])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def write_video_qa20k(root: Path, n: int = 2) -> tuple[Path, Path]:
    """(the JSONL, the media root): ``videos`` are relative LLaVA-Video-178K-style paths under the media root."""
    media = root / "llava_video_178k"
    rows = []
    for i in range(n):
        rel = f"0_30_s_youtube_v0_1/videos/ytb_clip{i}.mp4"
        (media / rel).parent.mkdir(parents=True, exist_ok=True)
        (media / rel).write_bytes(make_video_bytes(n_frames=12, fps=6))
        rows.append({"prompt": [{"role": "user", "content": VIDEO_PROMPT}], "videos": [rel],
                     "data_source": "video_caption_rl",
                     "reward_model": {"ground_truth": [{"question": "What moves?", "choices": ["A. Black", "B. White"],
                                                        "answer": "B"}], "style": "rule"}})
    path = root / "caprl_video_qa_20k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, media


def generator_text(questions: list[tuple[str, list[str], int]]) -> str:
    """MCQs as the official generation prompt asks for them (spec §1.2): ``#### N. **question**``, option lines
    ``   - A) ...``, ``**Answer:** X) text`` and a ``------`` separator."""
    blocks = []
    for n, (question, options, answer) in enumerate(questions, 1):
        lines = [f"#### {n}. **{question}**", *(f"   - {label}) {o}" for label, o in zip("ABCDEF", options))]
        blocks.append("\n".join([*lines, f"**Answer:** {'ABCDEF'[answer]}) {options[answer]}", "------"]))
    return "\n\n".join(blocks) + "\n"


def write_gen_qa_output(root: Path, n_parts: int = 3, per_part: int = 2) -> tuple[Path, list[str]]:
    """(gen_qa's output folder, every image path in part order): ``n_parts`` parts of ``per_part`` synthetic scenes,
    each line's ``image_path`` absolute (gen_qa reads a JSON list of paths), each question about the scene's first
    shape; the folder also holds the ``progress_part_{id}.jsonl`` files gen_qa resumes from."""
    scenes = write_scenes(root / "images", n_parts * per_part)
    out = root / "gen_qa_out"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for part in range(n_parts):
        lines = []
        for s in scenes[part * per_part : (part + 1) * per_part]:
            fact = s.facts[0]
            others = [c for c in ("red", "green", "blue", "yellow") if c != fact.color][:3]
            text = generator_text([(f"What color is the {fact.shape}?", [others[0], fact.color, *others[1:]], 1)])
            path = str(root / "images" / f"{s.key}.png")
            lines.append(json.dumps({"qa_response": text, "image_path": path}))
            paths.append(path)
        (out / f"part_{part}.jsonl").write_text("\n".join(lines) + "\n")
        (out / f"progress_part_{part}.jsonl").write_text(json.dumps({"index": per_part - 1}) + "\n")
    return out, paths


# The official Eval_CapRL.py stage-2 input (spec §5.1), ``intermediate_generations_{tag}_step{step}.jsonl``: one JSON
# object per line with exactly these keys. Stage 2 reads ``original_sample["prompt"]`` (it replaces the image prefix
# with the caption sentence, once per caption) and ``original_sample["answer"]``, and answers every caption in
# ``generated_captions``.
STAGE2_KEYS = ("original_sample", "generated_captions")
STAGE2_IMAGE_PREFIX = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
STAGE2_CAPTION_SENTENCE = ("<|im_start|>user\nHere is a detailed caption of an image: {cap}. Please answer the "
                           "question based on the caption.")


def read_stage2(path: Path) -> list[dict]:
    """A stage-2 file read as the official script reads it (``json.loads`` per line), each line checked to hold the
    layout's keys and nothing else, with the types stage 2 relies on."""
    items = [json.loads(line) for line in path.read_text().splitlines()]
    for item in items:
        assert tuple(item) == STAGE2_KEYS, f"{path}: keys {list(item)}, the layout has {list(STAGE2_KEYS)}"
        assert isinstance(item["original_sample"]["prompt"], str) and "answer" in item["original_sample"]
        assert isinstance(item["generated_captions"], list) and item["generated_captions"]
    return items
