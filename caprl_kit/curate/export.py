"""Export: the training set (CapRL-QA-75K / verl layout, Parquet + verl-ready JSONL, split by item), the audit
table (every question's trials and decision) and the funnel report (JSON + a self-contained HTML page).

The filter is applied here from the answer stage's accuracies, so changing thresholds re-exports without
re-answering. Every input item ends in exactly one bucket: kept, or dropped with a reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import pyarrow.parquet as pq

from caprl_kit import chat
from caprl_kit.curate.config import INPUT_PROMPT, CurateConfig, FilterConfig
from caprl_kit.curate.filter import decide
from caprl_kit.curate.stages import stage_dir
from caprl_kit.errors import CaprlError
from caprl_kit.io.fs import atomic_write_bytes, atomic_write_text, join, url_to_fs
from caprl_kit.io.locators import item_bytes, item_payload
from caprl_kit.io.media import read_bytes, url_limits
from caprl_kit.io.parquet import read_shard, rows_to_table, user_columns
from caprl_kit.io.readers import InputItem
from caprl_kit.log import get_logger
from caprl_kit.mcq.options import normalize_choice
from caprl_kit.prompts import PROMPTS
from caprl_kit.schemas.curate import CuratedQARow, QATrialsRow
from caprl_kit.schemas.layout import AUDIT, CURATED_SPLIT, CURATED_SPLIT_JSONL, FUNNEL

#: how many rejected-question messages (each naming its item key and question index) the funnel lists
MAX_REJECTED_EXAMPLES = 50

log = get_logger(__name__)


def _item_id(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _split(key: str, seed: int, val_fraction: float) -> str:
    h = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def _answer_text(q: dict[str, Any]) -> str:
    return next((normalize_choice(c)[1] for c in q["choices"] if normalize_choice(c)[0] == q["answer"]), "")


def _rows(run) -> list[dict[str, Any]]:
    return [r for url in run.shard_urls() for r in read_shard(url, run.artifact).to_pylist()]


def export(cfg: CurateConfig, items: dict[str, InputItem], carried: Sequence[str] = ()) -> dict[str, Any]:
    """The stages' shards -> the training splits, the audit table and the funnel; every item, in input order, is
    kept (its row goes to the split its key hashes to) or dropped with the first reason that applies. ``carried``:
    the input columns (``input.carry_columns``) copied into each curated row."""
    fs, dataset = url_to_fs(join(str(cfg.output_dir), "dataset"))
    fs.makedirs(dataset, exist_ok=True)
    generated, parsed, trials = _stage_rows(cfg)
    funnel = _new_funnel(len(items))
    audit: list[dict[str, Any]] = []
    curated: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    generator, answerer = _provenance(cfg)
    for key, item in items.items():  # input order
        per_type = funnel["per_media_type"][item.media_type]
        per_type["items_in"] += 1
        reason = _stage_failure(generated.get(key), parsed.get(key))
        _count_parsed(funnel, parsed.get(key))
        kept = _keep_questions(cfg.filter, trials.get(key, []), funnel, audit)
        if reason is None and not kept:
            reason = "no_question_kept"
        if reason is not None:
            funnel["items_dropped"][reason] += 1
            per_type["items_dropped"] += 1
            continue
        funnel["items_kept"] += 1
        funnel["questions_kept"] += len(kept)
        per_type["items_kept"] += 1
        per_type["questions_kept"] += len(kept)
        split = _split(key, cfg.seed, cfg.export.val_fraction)
        row = _curated_row(cfg, item, kept, split, len(curated[split]), generator, answerer)
        row.update({c: item.extra.get(c) for c in carried})
        funnel["prompts"][row["extra_info"].pop("prompt_source")] += 1
        curated[split].append(row)
    _warn_unused_prompts(cfg, funnel["prompts"])
    outputs = _write_splits(cfg, curated, carried)
    outputs.update(_write_audit(cfg, audit))
    outputs.update(_write_funnel(cfg, _close_funnel(funnel, curated, cfg.filter)))
    return {"funnel": funnel, "outputs": outputs}


def _stage_rows(
    cfg: CurateConfig,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The generate and parse rows by item key, and the answer stage's trials grouped by item key."""
    generated = {r["key"]: r for r in _rows(stage_dir(cfg, "generate"))}
    parsed = {r["key"]: r for r in _rows(stage_dir(cfg, "parse"))}
    trials: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in _rows(stage_dir(cfg, "answer")):
        trials[r["key"]].append(r)
    return generated, parsed, trials


def _new_funnel(items_in: int) -> dict[str, Any]:
    """The funnel's counters, all at zero."""
    return {
        "items_in": items_in,
        "items_kept": 0,
        "items_dropped": Counter(),
        "questions_generated_blocks": 0,
        "questions_parsed": 0,
        "questions_rejected_by_parser": 0,
        "questions_rejected": Counter(),
        "questions_rejected_examples": [],
        "questions_answered": 0,
        "questions_pass_visual": 0,
        "questions_pass_text": 0,
        "questions_pass_both": 0,
        "questions_duplicate": 0,
        "questions_capped": 0,
        "questions_kept": 0,
        "per_media_type": defaultdict(Counter),
        "prompts": Counter({"input": 0, "config": 0}),  # kept rows by where their training prompt comes from
    }


def _provenance(cfg: CurateConfig) -> tuple[str, str]:
    """Who wrote the questions (the generator's model, or ``import:<mode>``) and who answered them."""
    answerer = cfg.answer.backend.model or cfg.answer.backend.name
    generator = (
        (cfg.generate.backend.model or cfg.generate.backend.name)
        if cfg.import_mode == "none"
        else f"import:{cfg.import_mode}"
    )
    return generator, answerer


def _stage_failure(g: dict[str, Any] | None, p: dict[str, Any] | None) -> str | None:
    """Why an item has no questions to filter: not processed, or the generate or parse stage's status."""
    if g is None or p is None:
        return "not_processed"
    if g["status"] != "ok":
        return str(g["status"])
    if p["status"] != "ok":
        return str(p["status"])
    return None


def _count_parsed(funnel: dict[str, Any], p: dict[str, Any] | None) -> None:
    """The parser's counts for one item: question blocks, questions parsed, questions rejected (by kind, with the
    first ``MAX_REJECTED_EXAMPLES`` messages)."""
    if p is None:
        return
    funnel["questions_generated_blocks"] += p["n_blocks"]
    funnel["questions_parsed"] += len(p["questions"])
    funnel["questions_rejected_by_parser"] += p["n_dropped"]
    for rej in p.get("rejected") or []:  # absent in parse shards written before the field existed
        funnel["questions_rejected"][rej["kind"]] += 1
        if len(funnel["questions_rejected_examples"]) < MAX_REJECTED_EXAMPLES:
            funnel["questions_rejected_examples"].append(rej["reason"])


def _keep_questions(
    f: FilterConfig, trials: list[dict[str, Any]], funnel: dict[str, Any], audit: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One item's questions through the filter, in question order: the accuracy thresholds, then (``dedup``) one
    question per (question, answer text), then ``max_per_item``. Each decision goes to the audit; returns the kept
    MCQs."""
    kept: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for t in sorted(trials, key=lambda r: r["qa_index"]):
        funnel["questions_answered"] += 1
        keep, why = (
            decide(t["visual_acc"], t["text_acc"], f)
            if t["reason"] not in ("media_error", "answer_failed")
            else (False, t["reason"])
        )
        funnel["questions_pass_visual"] += int(t["visual_acc"] > f.min_visual_acc)
        funnel["questions_pass_text"] += int(t["text_acc"] < f.max_text_acc)
        if keep:
            funnel["questions_pass_both"] += 1
            dedup_key = (t["mcq"]["question"].strip().lower(), _answer_text(t["mcq"]).strip().lower())
            if f.dedup and dedup_key in seen:
                keep, why = False, "duplicate"
                funnel["questions_duplicate"] += 1
            elif f.max_per_item is not None and len(kept) >= f.max_per_item:
                keep, why = False, "cap"
                funnel["questions_capped"] += 1
            seen.add(dedup_key)
        audit.append({**t, "keep": keep, "reason": why})
        if keep:
            kept.append(t["mcq"])
    return kept


def _write_splits(
    cfg: CurateConfig, curated: dict[str, list[dict[str, Any]]], carried: Sequence[str]
) -> dict[str, str]:
    """Each split as Parquet (the curated_qa schema, plus the carried input columns) and as verl-ready JSONL,
    atomically."""
    fs, root = url_to_fs(str(cfg.output_dir))
    written = {}
    for split, rows in curated.items():
        table = rows_to_table(rows, CuratedQARow, user_columns(list(carried), rows))
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        atomic_write_bytes(fs, join(root, CURATED_SPLIT.format(split=split)), buf.getvalue())
        jsonl = "".join(json.dumps(_jsonl_row(r), ensure_ascii=False) + "\n" for r in rows)
        atomic_write_text(fs, join(root, CURATED_SPLIT_JSONL.format(split=split)), jsonl)
        written[f"{split}.parquet"] = join(str(cfg.output_dir), CURATED_SPLIT.format(split=split))
        written[f"{split}.jsonl"] = join(str(cfg.output_dir), CURATED_SPLIT_JSONL.format(split=split))
    return written


def _write_audit(cfg: CurateConfig, audit: list[dict[str, Any]]) -> dict[str, str]:
    """Every question's trials and decision (the qa_trials schema), atomically."""
    fs, root = url_to_fs(str(cfg.output_dir))
    buf = io.BytesIO()
    pq.write_table(rows_to_table(audit, QATrialsRow), buf, compression="zstd")
    atomic_write_bytes(fs, join(root, AUDIT), buf.getvalue())
    return {"audit.parquet": join(str(cfg.output_dir), AUDIT)}


def _close_funnel(funnel: dict[str, Any], curated: dict[str, list[dict[str, Any]]], f: FilterConfig) -> dict[str, Any]:
    """The counters as plain dicts, the rows per split and the filter used; every item is kept or dropped."""
    funnel["items_dropped"] = dict(funnel["items_dropped"])
    funnel["questions_rejected"] = dict(sorted(funnel["questions_rejected"].items()))
    funnel["per_media_type"] = {k: dict(v) for k, v in funnel["per_media_type"].items()}
    funnel["prompts"] = dict(funnel["prompts"])
    funnel["rows"] = {split: len(rows) for split, rows in curated.items()}
    funnel["filter"] = f.model_dump()
    assert funnel["items_in"] == funnel["items_kept"] + sum(funnel["items_dropped"].values())
    return funnel


def _write_funnel(cfg: CurateConfig, funnel: dict[str, Any]) -> dict[str, str]:
    """The funnel as a page (dataset/funnel.html) and as JSON, atomically."""
    out_dir = join(str(cfg.output_dir), "dataset")
    fs, out_path = url_to_fs(out_dir)
    root = url_to_fs(str(cfg.output_dir))[1]
    atomic_write_text(fs, join(out_path, "funnel.html"), funnel_html(funnel))
    atomic_write_text(fs, join(root, FUNNEL), json.dumps(funnel, indent=2))
    return {"funnel.json": join(str(cfg.output_dir), FUNNEL), "funnel.html": join(out_dir, "funnel.html")}


def _media_path(cfg: CurateConfig, item: InputItem) -> str:
    """A path verl and datasets can open: the source, or the embedded bytes written under dataset/media/."""
    if item.source and "://" not in item.source:
        return item.source
    data = item_bytes(item, cfg.media.max_file_bytes, url_limits(cfg.media))
    ext = ".mp4" if item.media_type == "video" else ".png"
    fs, base = url_to_fs(join(str(cfg.output_dir), "dataset", "media"))
    path = join(base, _item_id(item.key) + ext)
    if not fs.exists(path):
        atomic_write_bytes(fs, path, data)
    return path


def _curated_row(
    cfg: CurateConfig,
    item: InputItem,
    kept: list[dict[str, Any]],
    split: str,
    index: int,
    generator: str,
    answerer: str,
) -> dict[str, Any]:
    path = _media_path(cfg, item)
    video = item.media_type == "video"
    prompt, source = _prompt(cfg, item)
    image = None
    if not video:
        data = None
        if cfg.export.embed_media:
            data = item_payload(item, cfg.media.max_file_bytes, url_limits(cfg.media))
            if data is None:
                data = read_bytes(path, cfg.media.max_file_bytes, url_limits(cfg.media))
        image = {"bytes": data, "path": None if data is not None else path}
    return {
        "id": _item_id(item.key),
        "image": image,
        "images": None if video else [path],
        "videos": [path] if video else None,
        "prompt": prompt,
        "data_source": cfg.export.video_data_source if video else cfg.export.image_data_source,
        "ability": "caption",
        "reward_model": {"style": "rule", "ground_truth": kept},
        "extra_info": {
            "index": index,
            "split": split,
            "key": item.key,
            "source": item.source,
            "generator": generator,
            "answerer": answerer,
            "prompt_source": source,  # counted in the funnel, then dropped (not a curated_qa column)
        },
    }


def _prompt(cfg: CurateConfig, item: InputItem) -> tuple[list[chat.Message], str]:
    """A row's training prompt and where it comes from: the input row's own (``export.prompt_source: input`` and
    the row has one), else ``export.image_prompt`` / ``export.video_prompt`` after the media placeholder."""
    own = item.extra.get(INPUT_PROMPT) if cfg.export.prompt_source == "input" else None
    if own is not None:
        return input_prompt(own, item.key), "input"
    if item.media_type == "video":
        return [chat.message("user", "<video>\n" + PROMPTS.get(cfg.export.video_prompt))], "config"
    return [chat.message("user", "<image> " + PROMPTS.get(cfg.export.image_prompt))], "config"


def input_prompt(value: Any, key: str) -> list[chat.Message]:
    """An input row's ``prompt`` as chat messages, kept as written: a list of ``{role, content}`` (the verl / CapRL
    layout; other keys dropped), its JSON text (a CSV cell), or plain text (one user message). Anything else is a
    ``CaprlError`` naming the item and the key that replaces it."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        with contextlib.suppress(json.JSONDecodeError):  # else text that starts with a bracket: the prompt itself
            value = json.loads(value)
    if isinstance(value, str) and value.strip():
        return [chat.message("user", value)]
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    ):
        return [chat.message(m["role"], m["content"]) for m in value]
    raise CaprlError(
        f"input item {key}: its '{INPUT_PROMPT}' is neither text nor chat messages [{{role, content}}] "
        f"({json.dumps(value, default=str)[:120]}); fix that column, or set export.prompt_source=config to give every "
        "row export.image_prompt / export.video_prompt"
    )


def _warn_unused_prompts(cfg: CurateConfig, prompts: Counter[str]) -> None:
    """A configured prompt (export.image_prompt / video_prompt set) that rows did not get, because they kept their
    input's own: said once, with the key that gives it to every row."""
    chosen = sorted(k for k in ("image_prompt", "video_prompt") if k in cfg.export.model_fields_set)
    if chosen and prompts["input"]:
        log.warning(
            "%d exported row(s) kept their input's own prompt, not %s (export.prompt_source=input); set "
            "export.prompt_source=config to give every row the configured prompt",
            prompts["input"],
            " / ".join(f"export.{k}" for k in chosen),
        )


def _jsonl_row(row: dict[str, Any]) -> dict[str, Any]:
    """The same row for verl's JSONL loader: media as paths only (no bytes)."""
    out = {k: v for k, v in row.items() if k != "image"}
    return {k: v for k, v in out.items() if v is not None}


def funnel_html(f: dict[str, Any]) -> str:
    """A self-contained page (reports/templates/funnel.html.j2): the funnel as an inline SVG bar chart plus the
    tables."""
    from caprl_kit.reports import render

    steps = [
        ("items in", f["items_in"]),
        ("items kept", f["items_kept"]),
        ("question blocks", f["questions_generated_blocks"]),
        ("questions parsed", f["questions_parsed"]),
        ("answered", f["questions_answered"]),
        ("pass visual", f["questions_pass_visual"]),
        ("pass text-only", f["questions_pass_text"]),
        ("pass both", f["questions_pass_both"]),
        ("kept", f["questions_kept"]),
    ]
    return render("funnel.html.j2", f=f, steps=steps)
