"""The offline demo: the whole CapRL loop on a CPU with tiny models it builds itself (no GPU, no downloads).

Steps (each resumable; rerunning skips what is done):
1. build the tiny random-weight Qwen2.5-VL captioner and Qwen2 answerer (closed word-level vocabulary);
2. write the synthetic sanity task: one coloured shape per image, three MCQs (colour, shape, position), train /
   val / test split by image, complete and *incomplete* reference captions;
3. ``caprl curate`` the three splits in import mode (the lexical answerer reading the complete caption stands in for
   the visual answerer, the blind answerer answers nothing), with one corrupt file to show an honest funnel;
4. ``caprl train`` with the ``train/sanity_tiny_trl`` recipe: SFT warm start on the incomplete captions, then GRPO
   with the QA-accuracy reward (lexical answerer), the checkpoint chosen on the validation split;
5. ``caprl annotate`` the held-out test images with the chosen checkpoint;
6. ``caprl eval`` on the held-out test split, twice (SFT-only = A0, RL = A1), with the image-blind ceiling;
7. one HTML report: reward curve, funnel, eval table, sample captions.

With ``trainers`` (the default; ``caprl demo --no-trainers`` skips them) two more rows, from the same warm start:
the GRPO run with its reward served over HTTP by ``caprl serve-reward`` on 127.0.0.1, and DPO on reward-ranked pairs
of the warm start's own samples (``caprl train pairs``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from caprl_kit.errors import CaprlError
from caprl_kit.log import get_logger
from caprl_kit.progress import NullProgress, Progress

if TYPE_CHECKING:
    from caprl_kit.pairs.config import PairsConfig
    from caprl_kit.train.config import TrainConfig

log = get_logger(__name__)

SPLITS = ("train", "val", "test")
#: the share of warm-start captions that end in a false sentence (synthetic.false_statement): most of them, so the
#: warm start's greedy captions carry it (a learned hallucination, not an occasional one)
FALSE_SHARE = 0.8
#: GRPO steps of both arms of the faithfulness proof unless --rl-steps says (both arms were still gaining at 300)
FAITHFUL_RL_STEPS = 400
#: KL coefficient of both GRPO arms of the faithfulness proof: the original GRPO's (DeepSeekMath's beta), as the
#: CapRL paper trains GRPO "with a KL penalty". Without it the false sentence, which the QA reward cannot see, drifts
#: at random under QA-only GRPO (kept on two seeds of four, dropped on two; at 0.01 still dropped on seed 0), so the
#: arms' difference would be noise rather than the reward's doing (docs/hacking.md)
FAITHFUL_KL = 0.04
#: caption length cap of the demo's captioners; with faithfulness, where a complete caption and a false sentence fit
MAX_TOKENS, MAX_TOKENS_FAITHFUL = 16, 24
#: the claim check of every demo caption: rules splitter, lexical verifier against the reference caption
FAITHFULNESS = {"verifier": {"evidence": "reference", "backend": {"name": "lexical"}, "reference_column": "caption"}}


def curate_split(
    manifest: Path, out: Path, *, overwrite: bool, progress: Progress, export: dict[str, Any] | None = None
) -> dict[str, Any]:
    from caprl_kit.curate.config import CurateConfig
    from caprl_kit.curate.pipeline import run as curate

    cfg = CurateConfig.model_validate(
        {
            "input": {"path": str(manifest), "carry_columns": ["caption"]},  # the reference the claim checks read
            "import_mode": "qa",
            "answer": {"backend": {"name": "lexical"}, "evidence": "caption"},
            "export": {"val_fraction": 0.0, **(export or {})},
            "sharding": {"shard_size": 64},
            "output_dir": str(out),
        }
    )
    report = curate(cfg, overwrite=overwrite, progress=progress)
    funnel = json.loads((out / "dataset" / "funnel.json").read_text())
    return {
        "items_in": funnel["items_in"],
        "items_kept": funnel["items_kept"],
        "dropped": funnel["items_dropped"],
        "questions_in": funnel["questions_parsed"],
        "questions_kept": funnel["questions_kept"],
        "dataset": report.outputs["train.parquet"],
        "funnel": funnel,
    }


def evaluate_captioner(
    model: str,
    label: str,
    dataset: str,
    blind: str | None,
    out: Path,
    *,
    progress: Progress,
    overwrite: bool,
    max_tokens: int = MAX_TOKENS,
    claims: bool = False,
) -> dict[str, Any]:
    """Held-out QA accuracy of greedy captions (every question once, lexical answerer) + the blind ceiling; with
    ``claims`` also their hallucinated-claim rate (each claim checked against the image's reference caption)."""
    from caprl_kit.evaluate.config import EvalConfig
    from caprl_kit.evaluate.pipeline import run as evaluate

    cfg = EvalConfig.model_validate(
        {
            "label": label,
            "qa_utility": {
                "dataset": dataset,
                "qa": {"answerer": {"name": "lexical"}, "mode": "all_qa"},
                "blind_captions": blind,
            },
            "captioner": {
                "name": "transformers",
                "model": model,
                "batch_size": 32,
                "sampling": {"n": 1, "temperature": 0.0, "max_tokens": max_tokens},
            },
            "faithfulness": FAITHFULNESS if claims else None,
            "sharding": {"shard_size": 100},
            "output_dir": str(out),
        }
    )
    report = evaluate(cfg, overwrite=overwrite, progress=progress)
    task = json.loads(Path(report.outputs["results"]).read_text())["tasks"]["qa_utility"]
    checked = task.get("faithfulness") or {}
    return {
        "hallucinated_claim_rate": checked.get("hallucinated_claim_rate"),
        "claim_precision": checked.get("claim_precision"),
        "accuracy": report.metrics["qa_utility M_Acc"],
        "blind_ceiling": report.metrics.get("qa_utility blind_ceiling"),
        "monitors": task.get("caption_monitors", {}),
        "results": report.outputs["results"],
        "report": report.outputs["report"],
    }


@contextmanager
def reward_server(out: Path) -> Iterator[str]:
    """``caprl serve-reward`` as its own process on 127.0.0.1 (a free port), the way verl and TRL runs reach it on
    a cluster: the demo's QA reward (every question once, the lexical answerer). Yields its URL; stopped on exit."""
    import httpx
    import yaml

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out.mkdir(parents=True, exist_ok=True)
    recipe = out / "serve_reward.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "kind": "serve_reward",
                "host": "127.0.0.1",
                "port": port,
                "qa": {"mode": "all_qa", "answerer": {"name": "lexical"}},
            }
        )
    )
    log_file = (out / "serve_reward.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "caprl_kit.cli", "serve-reward", "--config", str(recipe)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise CaprlError(f"the reward server exited with {proc.returncode}; see {out / 'serve_reward.log'}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise CaprlError(f"the reward server did not answer on {url} within 120 s")
            time.sleep(0.5)
        log.info("reward server on %s (pid %d)", url, proc.pid)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()


def _service_metrics(metrics_path: Path) -> dict[str, float]:
    """The reward service's mean latency and captions/s over a training run's logged steps."""
    from caprl_kit.io.rows import read_rows

    rows = read_rows(str(metrics_path), missing_ok=True)
    out = {}
    for key in ("latency_s", "captions_per_s"):
        vals = [r[f"reward_service/{key}"] for r in rows if f"reward_service/{key}" in r]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out


def trainer_rows(
    out: Path,
    train_dir: Path,
    base: list[str],
    curated: dict[str, dict[str, Any]],
    test_set: str,
    *,
    seed: int,
    overwrite: bool,
    progress: Progress,
    dpo_overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """The rows ``trainers`` adds (on by default): the same GRPO run with its reward served over HTTP by ``caprl serve-reward``,
    and DPO on pairs of the warm start's own samples scored by the QA reward; both start from the same warm start
    and are chosen on the same validation split, then evaluated on the same held-out split."""
    from caprl_kit.config import load_config
    from caprl_kit.pairs.pipeline import run as pairs
    from caprl_kit.train.pipeline import run as train

    sft = str(train_dir / "sft")
    rows: dict[str, Any] = {}
    http_dir = out / "train_http"
    if overwrite or not (http_dir / "final" / "config.json").is_file():
        with reward_server(out / "reward_server") as url:
            # the server scores with its own qa config (every question once, lexical): the local one goes
            cfg = load_config(
                "train/sanity_tiny_trl",
                [
                    *base,
                    f"policy={sft}",
                    "~sft",
                    f"output_dir={http_dir}",
                    "~reward.qa.mode",
                    "~reward.qa.answerer",
                    f"reward.qa.service.urls=[{url}]",
                ],
                kind="train",
            )
            train(cast("TrainConfig", cfg), overwrite=overwrite, progress=progress)  # kind="train"
    best = json.loads((http_dir / "best.json").read_text())
    ev = evaluate_captioner(
        str(http_dir / "best"),
        "SFT + GRPO, reward over HTTP",
        test_set,
        None,
        out / "eval" / "rl_http",
        progress=progress,
        overwrite=overwrite,
    )
    rows["grpo_http"] = {
        "accuracy": ev["accuracy"],
        "best_step": best["step"],
        "monitors": ev["monitors"],
        "reward_service": _service_metrics(http_dir / "metrics.jsonl"),
        "results": ev["results"],
    }

    pcfg = load_config(
        "pairs/sanity_tiny",
        [
            f"data.path={curated['train']['dataset']}",
            f"captioner.model={sft}",
            f"captioner.sampling.seed={seed}",
            f"output_dir={out / 'pairs'}",
        ],
        kind="pairs",
    )
    report = pairs(cast("PairsConfig", pcfg), overwrite=overwrite, progress=progress)  # kind="pairs"
    summary = json.loads(Path(report.outputs["summary"]).read_text())
    dpo_dir = out / "train_dpo"
    if overwrite or not (dpo_dir / "final" / "config.json").is_file():
        dcfg = load_config(
            "train/sanity_tiny_dpo",
            [
                f"policy={sft}",
                f"data.train_files=[{report.outputs['pairs']}]",
                f"data.val_files=[{curated['val']['dataset']}]",
                f"output_dir={dpo_dir}",
                f"algorithm.seed={seed}",
                *dpo_overrides,
            ],
            kind="train",
        )
        train(cast("TrainConfig", dcfg), overwrite=overwrite, progress=progress)  # kind="train"
    best = json.loads((dpo_dir / "best.json").read_text())
    ev = evaluate_captioner(
        str(dpo_dir / "best"),
        "SFT + DPO on reward-ranked pairs",
        test_set,
        None,
        out / "eval" / "dpo",
        progress=progress,
        overwrite=overwrite,
    )
    rows["dpo"] = {
        "accuracy": ev["accuracy"],
        "best_step": best["step"],
        "monitors": ev["monitors"],
        "pairs": summary["pairs"],
        "chosen_longer_share": summary["chosen_longer_share"],
        "mean_margin": summary["mean_margin"],
        "results": ev["results"],
    }
    return rows


def run_demo(
    out_dir: str | Path = "demo_output",
    *,
    seed: int = 0,
    n_train: int = 200,
    n_val: int = 100,
    n_test: int = 200,
    sft_steps: int | None = None,
    rl_steps: int | None = None,
    eval_steps: int | None = None,
    trainers: bool = True,
    faithfulness: bool = False,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the demo into ``out_dir``; returns the summary (also written to ``summary.json``). ``sft_steps`` /
    ``rl_steps`` / ``eval_steps`` override the recipe (reduced runs); ``trainers`` adds the GRPO-over-HTTP and
    DPO rows (:func:`trainer_rows`); ``faithfulness`` makes most (80%) of the warm start's captions end in a false
    sentence, checks every captioner's claims and adds GRPO on QA + faithfulness (the hacking proof; both GRPO arms
    with the KL penalty ``FAITHFUL_KL``).

    ``out_dir`` is claimed first, as the verbs claim their output: a new or empty folder, or a previous demo run
    (``caprl_run.json`` says ``demo``); anything else is refused naming it, before any work, and ``overwrite`` only
    ever removes a previous demo run. Its lock is held until the demo returns."""
    from caprl_kit.io.lock import output_lock_scope
    from caprl_kit.io.rundir import prepare_output
    from caprl_kit.models.tiny import check_options
    from caprl_kit.synthetic import check_task_options

    check_options(seed, tokenizer="words")
    check_task_options(n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
    with output_lock_scope():
        prepare_output(str(out_dir), "demo", overwrite=overwrite, same_command=True, option="--out")
        return _run_demo(
            Path(out_dir),
            seed=seed,
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            sft_steps=sft_steps,
            rl_steps=rl_steps,
            eval_steps=eval_steps,
            trainers=trainers,
            faithfulness=faithfulness,
            progress=progress,
            overwrite=overwrite,
        )


def _run_demo(
    out: Path,
    *,
    seed: int,
    n_train: int,
    n_val: int,
    n_test: int,
    sft_steps: int | None,
    rl_steps: int | None,
    eval_steps: int | None,
    trainers: bool,
    faithfulness: bool,
    progress: Progress | None,
    overwrite: bool,
) -> dict[str, Any]:
    from caprl_kit.annotate.config import AnnotateConfig
    from caprl_kit.annotate.pipeline import run as annotate
    from caprl_kit.config import load_config
    from caprl_kit.demo_report import write_report
    from caprl_kit.models.tiny import build_tiny_models
    from caprl_kit.synthetic import write_sanity_task
    from caprl_kit.train.pipeline import run as train

    progress = progress or NullProgress()
    summary: dict[str, Any] = {"output_dir": str(out), "seed": seed}

    progress.start("tiny models", total=1)
    models = build_tiny_models(out / "models", seed=seed, tokenizer="words")
    progress.advance("tiny models")
    progress.finish("tiny models")
    summary["models"] = {k: str(v) for k, v in models.items()}

    manifests = write_sanity_task(
        out / "data",
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        seed=seed,
        false_share=FALSE_SHARE if faithfulness else 0.0,
        placeholder=not faithfulness,
    )
    with manifests["train"].open("a") as fh:  # one broken item: the funnel must account for it
        fh.write(json.dumps({"path": "images/corrupt.png", "qa": [], "caption": "", "caption_incomplete": ""}) + "\n")
    (out / "data" / "train" / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)

    curated = {
        split: curate_split(manifests[split], out / "curate" / split, overwrite=overwrite, progress=progress)
        for split in SPLITS
    }
    summary["curate"] = {k: {x: y for x, y in v.items() if x != "funnel"} for k, v in curated.items()}

    train_dir = out / "train"
    overrides = [
        f"policy={models['captioner']}",
        f"data.train_files=[{curated['train']['dataset']}]",
        f"data.val_files=[{curated['val']['dataset']}]",
        f"sft.data_files=[{manifests['train']}]",
        f"output_dir={train_dir}",
        f"algorithm.seed={seed}",
        *(
            [f"data.max_response_length={MAX_TOKENS_FAITHFUL}", f"algorithm.kl_coef={FAITHFUL_KL}"]
            if faithfulness
            else []
        ),
    ]
    if faithfulness and rl_steps is None:
        rl_steps = FAITHFUL_RL_STEPS
    for key, value in (
        ("sft.max_steps", sft_steps),
        ("algorithm.max_steps", rl_steps),
        ("algorithm.eval_steps", eval_steps),
    ):
        if value:
            overrides.append(f"{key}={value}")
    tcfg = load_config("train/sanity_tiny_trl", overrides, kind="train")
    if overwrite or not (train_dir / "final" / "config.json").is_file():
        report = train(cast("TrainConfig", tcfg), overwrite=overwrite, progress=progress)  # kind="train"
        train_metrics = report.metrics
    else:
        log.info("reusing the finished training run in %s", train_dir)
        train_metrics = {}
    best = json.loads((train_dir / "best.json").read_text())
    summary["train"] = {
        "sft": str(train_dir / "sft"),
        "best": str(train_dir / "best"),
        "best_step": best["step"],
        "best_val_qa_accuracy": best["val_qa_accuracy"],
        **train_metrics,
    }

    acfg = AnnotateConfig(
        input={"path": str(out / "data" / "test" / "images")},
        backend={
            "name": "transformers",
            "model": str(train_dir / "best"),
            "batch_size": 32,
            "sampling": {"n": 1, "temperature": 0.0, "max_tokens": MAX_TOKENS_FAITHFUL if faithfulness else MAX_TOKENS},
        },
        sharding={"shard_size": 100},
        output={"export_jsonl": True},
        output_dir=str(out / "annotate"),
    )
    report = annotate(acfg, overwrite=overwrite, progress=progress)
    summary["annotate"] = {
        "items": report.n_items,
        "ok": report.n_ok,
        "failed": report.n_failed,
        "captions_jsonl": report.outputs.get("captions.jsonl"),
    }

    test_set, blind = curated["test"]["dataset"], str(manifests["train"])
    tokens = MAX_TOKENS_FAITHFUL if faithfulness else MAX_TOKENS
    arms = {
        "A0_sft": evaluate_captioner(
            str(train_dir / "sft"),
            "SFT warm start only",
            test_set,
            None,
            out / "eval" / "sft",
            progress=progress,
            overwrite=overwrite,
            max_tokens=tokens,
            claims=faithfulness,
        ),
        "A1_rl": evaluate_captioner(
            str(train_dir / "best"),
            "SFT + GRPO (CapRL)",
            test_set,
            blind,
            out / "eval" / "rl",
            progress=progress,
            overwrite=overwrite,
            max_tokens=tokens,
            claims=faithfulness,
        ),
    }
    if faithfulness:  # the same warm start, GRPO on QA accuracy + claim precision, each normalised in its group
        faithful_dir = out / "train_faithful"
        kept = [o for o in overrides if not o.startswith(("policy=", "output_dir=", "sft."))]
        fcfg = load_config(
            "train/sanity_tiny_faithful_trl",
            [*kept, f"policy={train_dir / 'sft'}", "sft=null", f"output_dir={faithful_dir}"],
            kind="train",
        )
        if overwrite or not (faithful_dir / "final" / "config.json").is_file():
            train(cast("TrainConfig", fcfg), overwrite=overwrite, progress=progress)
        arms["A2_faithful"] = evaluate_captioner(
            str(faithful_dir / "best"),
            "SFT + GRPO on QA + faithfulness (per-term)",
            test_set,
            None,
            out / "eval" / "faithful",
            progress=progress,
            overwrite=overwrite,
            max_tokens=tokens,
            claims=True,
        )
    a0, a1 = arms["A0_sft"], arms["A1_rl"]
    summary["eval"] = {
        **{k: a["accuracy"] for k, a in arms.items()},
        "blind_ceiling": a1["blind_ceiling"],
        "gain": a1["accuracy"] - a0["accuracy"],
        "results": [a["results"] for a in arms.values()],
        "monitors": {k: a["monitors"] for k, a in arms.items()},
    }
    if faithfulness:
        summary["eval"]["hallucinated_claim_rate"] = {k: a["hallucinated_claim_rate"] for k, a in arms.items()}
        summary["eval"]["claim_precision"] = {k: a["claim_precision"] for k, a in arms.items()}
    if trainers:
        summary["trainers"] = trainer_rows(
            out,
            train_dir,
            [o for o in overrides if not o.startswith(("policy=", "output_dir="))],
            curated,
            test_set,
            seed=seed,
            overwrite=overwrite,
            progress=progress,
            dpo_overrides=[o for o in overrides if o.startswith(("algorithm.max_steps=", "algorithm.eval_steps="))],
        )
    summary["report"] = str(write_report(out, summary, curated))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
