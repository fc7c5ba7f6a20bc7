"""``caprl eval export-official``: a caprl eval run's captions as the official ``Eval_CapRL.py`` stage 2 reads them
(spec §5.1), so the official evaluator can score captions caprl made.

One file per image benchmark, ``intermediate_generations_<tag>_step<N>.jsonl``: one JSON object per benchmark row,
``{"original_sample": <the row as the benchmark file holds it>, "generated_captions": [<every caption>]}`` (the
item's ``captioner.sampling.n`` captions, or all the precomputed ones). Stage 2 reads ``original_sample["prompt"]``
(a Qwen chat string whose image prefix it replaces with the caption sentence) and ``original_sample["answer"]``; a
row in caprl's own layout (``question``, ``options``) gets a ``prompt`` built as the official files build theirs
from the question caprl eval asks. Items without a caption are left out and counted (stage 2 cannot score an empty
caption list). Video benchmarks are not exported: the official video Prism's stage-2 layout is not published.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from caprl_kit.config import validate
from caprl_kit.errors import CaprlError
from caprl_kit.evaluate.caption_stage import stage_captions
from caprl_kit.evaluate.captions_file import precomputed, read_captions
from caprl_kit.evaluate.config import BenchmarkConfig, EvalConfig
from caprl_kit.evaluate.data import Sample, load_benchmark, question_text, read_rows
from caprl_kit.io.fs import atomic_write_text, join, url_to_fs
from caprl_kit.io.lock import output_lock_scope
from caprl_kit.io.rundir import RESOLVED, prepare_output, run_command
from caprl_kit.io.stats import utc_now
from caprl_kit.log import get_logger
from caprl_kit.schemas.layout import EVAL_CAPTIONS_DIR, OFFICIAL_EXPORT_DIR, OFFICIAL_EXPORT_MANIFEST, OFFICIAL_STAGE2

log = get_logger(__name__)

COMMAND = "eval export-official"
#: the official stage 1's caption prompt prefix, which stage 2 replaces with "Here is a detailed caption ..."
IMAGE_PREFIX = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
PROMPT_END = "<|im_end|>\n<|im_start|>assistant\n"
#: Eval_CapRL.py's own default for --step
DEFAULT_STEP = 400


@dataclass
class OfficialFile:
    """One written stage-2 file and how to score it with the official script."""

    task: str
    file: str
    tag: str
    step: int
    data_path: str
    items: int
    captions_per_item: list[int]  # [min, max] over the written items
    not_captioned: int
    prompts_built: int  # rows of caprl's own layout that got an official-style ``prompt``
    stage2: str  # the official stage-2 command line (model paths left for the user)


@dataclass
class OfficialExport:
    run_dir: str
    output: str
    step: int
    files: list[OfficialFile] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # task -> why it was not exported


def official_prompt(row: dict[str, Any]) -> str:
    """The Qwen chat prompt an official ``lmm_eval_*.json`` row carries, for a row in caprl's own layout: the image
    prefix, the question as caprl eval asks it (options and the answer instruction included), the assistant turn."""
    return IMAGE_PREFIX + question_text(row) + PROMPT_END


def read_eval_config(run_dir: str) -> EvalConfig:
    """The config a caprl eval run ran with (its ``config.resolved.yaml``); anything else is refused."""
    fs, path = url_to_fs(run_dir)
    if not fs.isdir(path):
        raise CaprlError(f"{run_dir} is not a folder; pass the OUTPUT folder of a caprl eval run")
    command = run_command(fs, path)
    if command != "eval":
        what = f"a caprl {command} run" if command else "not a caprl run (no caprl_run.json)"
        raise CaprlError(f"{run_dir} is {what}; pass the OUTPUT folder of a caprl eval run")
    resolved = join(path, RESOLVED)
    if not fs.exists(resolved):
        raise CaprlError(f"{run_dir} has no {RESOLVED}: the eval run did not start; run caprl eval first")
    with fs.open(resolved, "r") as fh:
        data = yaml.safe_load(fh.read()) or {}
    cfg: EvalConfig = validate(EvalConfig, data, source=join(run_dir, RESOLVED))
    return cfg


def export_official(
    run_dir: str,
    output: str | None = None,
    *,
    step: int = DEFAULT_STEP,
    tags: dict[str, str] | None = None,
) -> OfficialExport:
    """Write the stage-2 files of every image benchmark of the eval run in ``run_dir`` into ``output`` (default
    ``RUN_DIR/official``), plus ``official_export.json`` (what was written, how to score it). ``tags``: the
    official ``--tag`` per task (default: the task name). A folder that is not empty and not a previous export is
    refused; a previous export is written over, file by file."""
    cfg = read_eval_config(run_dir)
    out = output or join(run_dir, OFFICIAL_EXPORT_DIR)
    tags = tags or {}
    unknown = sorted(set(tags) - {b.name for b in cfg.benchmarks})
    if unknown:
        names = ", ".join(b.name for b in cfg.benchmarks) or "none"
        raise CaprlError(f"--tag names task(s) {', '.join(unknown)} that the run does not have (its tasks: {names})")
    result = OfficialExport(run_dir=run_dir, output=out, step=step)
    prepared = []
    for bench in cfg.benchmarks:  # everything read and checked before the output is claimed
        if bench.media_type != "image":
            result.skipped[bench.name] = (
                "a video benchmark: the official video Prism's stage-2 layout is not published (Eval_CapRL.py "
                "reads image benchmarks)"
            )
            continue
        prepared.append((bench, _lines(cfg, run_dir, bench)))
    if not prepared:
        raise CaprlError(f"{run_dir} has no image benchmark to export ({'; '.join(result.skipped.values()) or 'none'})")
    with output_lock_scope():
        prepare_output(out, COMMAND, same_command=True, option="--output")
        fs, base = url_to_fs(out)
        for bench, (lines, counts, missing, built) in prepared:
            tag = tags.get(bench.name, bench.name)
            name = OFFICIAL_STAGE2.format(tag=tag, step=step)
            atomic_write_text(fs, join(base, name), "".join(lines))
            result.files.append(
                OfficialFile(
                    task=bench.name,
                    file=join(out, name),
                    tag=tag,
                    step=step,
                    data_path=bench.path,
                    items=len(lines),
                    captions_per_item=[min(counts), max(counts)] if counts else [0, 0],
                    not_captioned=missing,
                    prompts_built=built,
                    stage2=(
                        f"python Eval_CapRL.py --stage_num 2 --tag {tag} --step {step} --data-path {bench.path} "
                        "--model-path MODEL_PATH --reward-model-path CapRL-Eval-3B"
                    ),
                )
            )
            if missing:
                log.warning("%s: %d item(s) have no caption and are not in %s", bench.name, missing, name)
        manifest = {"created_at": utc_now(), **asdict(result)}
        atomic_write_text(fs, join(base, OFFICIAL_EXPORT_MANIFEST), json.dumps(manifest, indent=2))
    return result


def _lines(cfg: EvalConfig, run_dir: str, bench: BenchmarkConfig) -> tuple[list[str], list[int], int, int]:
    """(the JSONL lines, captions per written item, items without a caption, prompts built) for one benchmark."""
    rows = read_rows(bench)
    rows = rows[: bench.limit] if bench.limit else rows
    samples = load_benchmark(bench)  # one per row, in order: the media path each row resolves to
    captions = _captions(cfg, run_dir, bench, samples)
    lines, counts, missing, built = [], [], 0, 0
    for row, sample in zip(rows, samples, strict=True):
        caps = captions.get(sample.media)
        if not caps:
            missing += 1
            continue
        original = dict(row)
        if not isinstance(original.get("prompt"), str):
            original["prompt"] = official_prompt(row)
            built += 1
        lines.append(json.dumps({"original_sample": original, "generated_captions": list(caps)}, default=_json) + "\n")
        counts.append(len(caps))
    return lines, counts, missing, built


def _captions(cfg: EvalConfig, run_dir: str, bench: BenchmarkConfig, samples: list[Sample]) -> dict[str, list[str]]:
    """The captions the run's stage 2 read for this benchmark: its precomputed file's, else ``captions/<task>``."""
    if cfg.captions is not None:
        media = list(dict.fromkeys((s.media, s.media_type) for s in samples))
        return precomputed(cfg.captions, media, read_captions(cfg.captions))[0]
    folder = join(run_dir, EVAL_CAPTIONS_DIR.format(task=bench.name))
    fs, path = url_to_fs(folder)
    if not fs.exists(path):
        raise CaprlError(
            f"{run_dir} holds no captions for {bench.name} ({EVAL_CAPTIONS_DIR.format(task=bench.name)} is missing): "
            "run caprl eval on it to the end first"
        )
    return stage_captions(folder)[0]


def _json(value: Any) -> Any:
    """A benchmark row's values JSON does not hold (a Parquet benchmark's embedded bytes, dates)."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    return str(value)
