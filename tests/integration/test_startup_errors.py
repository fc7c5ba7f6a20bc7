"""Startup failures end in one CaprlError (exit code 2 from the CLI) whose message names the input and the fix,
never in a traceback. Real tiny models, and corrupt copies of them, in temporary folders; every case fails before
any heavy work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from caprl_kit.errors import CaprlError
from cli_cases import cli, write_yaml
from media_factory import make_image_bytes

MISSING = "/nonexistent/caprl-startup"
HUB_ID = "caprl-tests/no-such-model"  # never cached; the tests run with HF_HUB_OFFLINE=1 (conftest)


@pytest.fixture(scope="module")
def env(tiny_models, tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("startup")
    (root / "images").mkdir()
    (root / "images" / "img.png").write_bytes(make_image_bytes())
    truncated = root / "truncated"
    shutil.copytree(tiny_models["captioner"], truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (root / "not_a_model").mkdir()
    (root / "not_a_model" / "README.md").write_text("notes, no model here")
    qa = [{"question": "What color?", "choices": ["A) red", "B) blue"], "answer": "A"}]
    pq.write_table(pa.table({"prompt": [[{"role": "user", "content": "<image> Describe."}]],
                             "images": [["images/img.png"]],
                             "reward_model": [{"style": "rule", "ground_truth": qa}]}), root / "train.parquet")
    pq.write_table(pa.table({"path": ["images/img.png"], "caption": ["a red square"]}), root / "other.parquet")
    (root / "bad_train.jsonl").write_text('{"prompt": [oops\n')
    (root / "bench_bad.jsonl").write_text('{"image": "images/img.png", "question": "q", "answer": "A"}\n{broken\n')
    (root / "run").mkdir()
    (root / "run" / "results_latest.json").write_text('{"captioner": "x", "tasks": {')
    cap, ans = tiny_models["captioner"], tiny_models["answerer"]
    annotate = write_yaml(root / "annotate.yaml", f"""
        kind: annotate
        input: {{path: {root / 'images'}}}
        backend: {{name: transformers, model: {cap}, sampling: {{max_tokens: 2}}}}
    """)
    train = write_yaml(root / "train.yaml", f"""
        kind: train
        policy: {cap}
        data: {{train_files: [{root / 'train.parquet'}]}}
        trl: {{report_to: []}}
    """)
    evaluate = write_yaml(root / "eval.yaml", f"""
        kind: eval
        benchmarks: [{{name: b, path: {root / 'bench_bad.jsonl'}}}]
        captioner: {{name: transformers, model: {cap}}}
        answerer: {{name: lexical}}
    """)
    return {"root": root, "cap": cap, "ans": ans, "truncated": truncated, "annotate": annotate, "train": train,
            "eval": evaluate}


# each case: (argv from env and a fresh output folder, fragments the message must contain)
Case = Callable[[dict[str, Any], Path], tuple[list[str], list[str]]]


def annotate(*overrides: str) -> Callable[[dict[str, Any], Path], list[str]]:
    return lambda e, out: ["annotate", "--config", str(e["annotate"]), "--output", str(out),
                           *[o.format(**e) for o in overrides]]


def train(*overrides: str) -> Callable[[dict[str, Any], Path], list[str]]:
    return lambda e, out: ["train", "--config", str(e["train"]), "--output", str(out),
                           *[o.format(**e) for o in overrides]]


def evaluate(*overrides: str) -> Callable[[dict[str, Any], Path], list[str]]:
    return lambda e, out: ["eval", "--config", str(e["eval"]), "--output", str(out),
                           *[o.format(**e) for o in overrides]]


CLI_CASES: dict[str, tuple[Callable[[dict[str, Any], Path], list[str]], list[str]]] = {
    # model loading (the captioner of annotate)
    "annotate-missing-model-path": (annotate(f"backend.model={MISSING}/model"),
                                    ["backend.model", f"{MISSING}/model", "does not exist"]),
    "annotate-truncated-weights": (annotate("backend.model={truncated}"),
                                   ["{truncated}", "model.safetensors is truncated", "download or build"]),
    "annotate-folder-without-model": (annotate("backend.model={root}/not_a_model"),
                                      ["{root}/not_a_model", "has no config.json"]),
    "annotate-hub-id-offline": (annotate(f"backend.model={HUB_ID}"),
                                [HUB_ID, "not in the Hugging Face cache", "offline",
                                 f"huggingface-cli download {HUB_ID}", "local model directory"]),
    "annotate-text-only-captioner": (annotate("backend.model={ans}"),
                                     ["{ans}", "is a text-only model (Qwen2ForCausalLM); a captioner needs a "
                                      "vision-language model"]),
    "annotate-bad-dtype": (annotate("backend.dtype=float17"), ["backend.dtype", "float17", "float16"]),
    "annotate-bad-device-name": (annotate("backend.device=gpu:9"), ["backend.device", "gpu:9", "cuda:N"]),
    "annotate-min-over-max-pixels": (annotate("media.min_pixels=2000000"),
                                     ["media.min_pixels", "2000000", "max_pixels"]),
    "annotate-frames-range": (annotate("media.video_min_frames=9", "media.video_max_frames=3"),
                              ["media.video_min_frames", "video_max_frames"]),
    # training data and policy
    "train-missing-policy": (train(f"policy={MISSING}/policy"), ["policy", f"{MISSING}/policy", "does not exist"]),
    "train-text-only-policy": (train("policy={ans}"), ["policy", "{ans}", "text-only model (Qwen2ForCausalLM)"]),
    "train-truncated-policy": (train("policy={truncated}"), ["policy", "model.safetensors is truncated"]),
    "train-hub-policy-offline": (train(f"policy={HUB_ID}"), [f"policy'{HUB_ID}'", "offline", "set policy"]),
    "train-missing-train-file": (train(f"data.train_files=[{MISSING}/train.parquet]"),
                                 ["data.train_files.0", f"{MISSING}/train.parquet", "does not exist"]),
    "train-missing-val-file": (train(f"data.val_files=[{MISSING}/val.parquet]"),
                               ["data.val_files.0", f"{MISSING}/val.parquet", "does not exist"]),
    "train-not-curated-schema": (train("data.train_files=[{root}/other.parquet]"),
                                 ["{root}/other.parquet", "lacks column(s) prompt, images or image, reward_model",
                                  "expected prompt, images or image, reward_model", "caprl curate"]),
    "train-malformed-jsonl": (train("data.train_files=[{root}/bad_train.jsonl]"),
                              ["{root}/bad_train.jsonl", "line 1 is not valid JSON"]),
    "train-missing-sft-file": (train("sft={{data_files: [" + MISSING + "/sft.jsonl]}}"),
                               ["sft.data_files.0", f"{MISSING}/sft.jsonl"]),
    "train-batch-not-divisible": (train("trl.per_device_batch_size=3"),
                                  ["trl.per_device_batch_size", "(3 x 1 = 3)", "algorithm.num_generations (8)"]),
    # eval benchmark and results files
    "eval-malformed-benchmark-line": (evaluate(), ["{root}/bench_bad.jsonl", "line 2 is not valid JSON"]),
    "eval-missing-benchmark": (evaluate("benchmarks=[{{name: b, path: " + MISSING + "/bench.jsonl}}]"),
                               [f"{MISSING}/bench.jsonl", "does not exist"]),
    "eval-duplicate-benchmark-names": (
        evaluate("benchmarks=[{{name: b, path: {root}/bench_bad.jsonl}}, {{name: b, path: {root}/bench_bad.jsonl}}]"),
        ["benchmarks.1.name", "'b'"]),
    "eval-compare-corrupt-results": (lambda e, out: ["eval", "compare", str(e["root"] / "run"), f"out={out}/r.html"],
                                     ["{root}/run/results_latest.json", "not a valid caprl eval results file"]),
    # helper commands
    "models-tiny-unknown-arch": (lambda e, out: ["models", "tiny", "--out", str(out), "--answerer-arch", "qwen9"],
                                 ["answerer_arch", "qwen9", "qwen2, qwen3"]),
    "models-tiny-unknown-tokenizer": (lambda e, out: ["models", "tiny", "--out", str(out), "--tokenizer", "spm"],
                                      ["tokenizer", "'spm'", "bpe, words"]),
    "models-tiny-negative-seed": (lambda e, out: ["models", "tiny", "--out", str(out), "--seed=-1"],
                                  ["seed", "non-negative", "-1"]),
}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli_startup_failure_names_the_input(name: str, env: dict[str, Any], tmp_path: Path) -> None:
    argv_of, fragments = CLI_CASES[name]
    out = tmp_path / "out"
    cli(argv_of(env, out), 2, *(fragment.format(**env) for fragment in fragments))
    if name.startswith("models-tiny"):
        assert not out.exists()  # checked before anything is written


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_device_without_a_gpu(env: dict[str, Any], tmp_path: Path) -> None:
    cli(annotate("backend.device=cuda")(env, tmp_path / "out"), 2, "device 'cuda' is not available")


def test_empty_api_key_variable(env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPRL_TEST_EMPTY_KEY", "")
    cli(annotate("backend.name=openai", "backend.openai.api_key_env=CAPRL_TEST_EMPTY_KEY",
                 "backend.openai.max_retries=0")(env, tmp_path / "out"), 2, "$CAPRL_TEST_EMPTY_KEY, which is set but empty")


# --------------------------------------------------------------------------- the same failures from Python


def _sanity(tmp: Path, **kw: Any) -> None:
    from caprl_kit.synthetic import write_sanity_task

    write_sanity_task(tmp / "task", **kw)


def _server(tmp: Path, value: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    from caprl_kit.rewards.server import RewardServerConfig
    from caprl_kit.rewards.server_app import create_app

    if value is None:
        monkeypatch.delenv("CAPRL_TEST_TOKEN", raising=False)
    else:
        monkeypatch.setenv("CAPRL_TEST_TOKEN", value)
    create_app(RewardServerConfig.model_validate({"token_env": "CAPRL_TEST_TOKEN",
                                                  "qa": {"answerer": {"name": "lexical"}}}))


def _backend(**cfg: Any) -> Callable[..., None]:
    def build(tmp: Path, env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
        from caprl_kit.backends import build_backend
        from caprl_kit.backends.config import BackendConfig

        build_backend(BackendConfig(**{k: str(v).format(**env) if isinstance(v, str) else v
                                       for k, v in cfg.items()}))

    return build


def _benchmark(tmp: Path, env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from caprl_kit.evaluate.config import BenchmarkConfig
    from caprl_kit.evaluate.data import load_benchmark

    path = tmp / "lmm_eval_x.json"
    path.write_text('[\n  {"image": "a.png", "prompt": "p", "answer": "A"},\n  {"image": "b.png" "answer": "B"}\n]')
    load_benchmark(BenchmarkConfig(name="x", path=str(path)))


PY_CASES: dict[str, tuple[Callable[[Path, dict[str, Any], pytest.MonkeyPatch], None], list[str]]] = {
    "synth-negative-count": (lambda t, e, m: _sanity(t, n_train=-1), ["n_train", ">= 0", "-1"]),
    "synth-zero-size": (lambda t, e, m: _sanity(t, n_train=1, size=0), ["size", "got 0"]),
    "server-token-variable-empty": (lambda t, e, m: _server(t, "", m), ["token_env", "$CAPRL_TEST_TOKEN", "empty"]),
    "server-token-variable-unset": (lambda t, e, m: _server(t, None, m), ["token_env", "$CAPRL_TEST_TOKEN", "unset"]),
    "vllm-missing-model-path": (_backend(name="vllm", model=f"{MISSING}/m"), [f"{MISSING}/m", "does not exist"]),
    "answerer-truncated-weights": (_backend(name="transformers", model="{truncated}"), ["{truncated}", "truncated"]),
    "official-json-benchmark-line": (_benchmark, ["lmm_eval_x.json", "line 3 is not valid JSON"]),
}


@pytest.mark.parametrize("name", list(PY_CASES))
def test_python_startup_failure_names_the_input(name: str, env: dict[str, Any], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    call, fragments = PY_CASES[name]
    with pytest.raises(CaprlError) as info:
        call(tmp_path, env, monkeypatch)
    for fragment in fragments:
        assert fragment.format(**env) in str(info.value), (fragment, str(info.value))


# --------------------------------------------------------------------------- killed builds look unfinished


def test_killed_tiny_build_leaves_nothing_that_looks_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from caprl_kit.models import tiny

    def killed(out: Path, *args: Any) -> None:
        (out / "config.json").write_text("{}")  # half-way through writing the model
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny, "_build_captioner", killed)
    with pytest.raises(KeyboardInterrupt):
        tiny.build_tiny_models(tmp_path / "models")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == []  # no captioner/, no marker, no temp dir


def test_killed_synth_leaves_no_split_that_looks_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from caprl_kit import synthetic

    real, calls = synthetic.incomplete_caption, []

    def killed_in_val(scene: Any, rng: Any, *args: Any) -> str:
        calls.append(scene.key)
        if len(calls) > 2:  # the first scene of the second split
            raise KeyboardInterrupt
        return real(scene, rng, *args)

    monkeypatch.setattr(synthetic, "incomplete_caption", killed_in_val)
    with pytest.raises(KeyboardInterrupt):
        synthetic.write_sanity_task(tmp_path, n_train=2, n_val=2, n_test=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]  # complete; val/ and test/ absent
    assert len((tmp_path / "train" / "manifest.jsonl").read_text().splitlines()) == 2


def test_staged_dir_keeps_the_previous_version_on_failure(tmp_path: Path) -> None:
    from caprl_kit.io.fs import staged_dir

    target = tmp_path / "model"
    with staged_dir(target) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError), staged_dir(target) as tmp:
        (tmp / "v").write_text("2")
        raise RuntimeError("killed")
    assert (target / "v").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert json.dumps(sorted(p.name for p in target.iterdir())) == '["v"]'
