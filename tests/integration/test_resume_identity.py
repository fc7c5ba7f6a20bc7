"""Resume identity (caprl_kit.config.identity / config_hash): a field that does not change outputs (where the engine
runs, concurrency, timeouts, batch sizes, export switches, runner settings) resumes; a changed prompt text is
refused naming it; a shard made under another config is never reused, also when the run manifest was lost; other
package versions warn instead of refusing."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.pipeline import run
from caprl_kit.config import VOLATILE, identity
from caprl_kit.errors import ResumeRefused
from caprl_kit.prompts import PROMPTS
from media_factory import make_image_bytes

#: a new value for every volatile field an annotate config has (the test below fails when one is missing)
VOLATILE_CHANGES: dict[str, Any] = {
    "backend.device": "cpu",
    "backend.batch_size": 3,
    "backend.vllm.tensor_parallel_size": 4,
    "backend.vllm.gpu_memory_utilization": 0.5,
    "backend.vllm.enforce_eager": True,
    "backend.vllm.max_num_seqs": 32,
    "backend.openai.base_url": "http://10.0.0.7:9000/v1",
    "backend.openai.api_key_env": "OTHER_KEY",
    "backend.openai.served_model": "moved",
    "backend.openai.max_concurrency": 512,
    "backend.openai.timeout_s": 30.0,
    "backend.openai.max_retries": 1,
    "backend.openai.backoff_base_s": 0.1,
    "backend.openai.backoff_max_s": 2.0,
    "output.export_jsonl": True,
    "batching.window": 7,
    "decode.workers": 1,
    "decode.ahead": 8,
    "batching.max_batch_tokens": 4096,
    "runner.max_shard_retries": 3,
    "media.url_connect_timeout_s": 3.0,
    "media.url_read_timeout_s": 5.0,
    "media.video_decoder": "linear",  # the same frames as sparse (tests/unit/test_video_decode.py)
    "input.duplicate_keys": "suffix",  # no key repeats: the listing, and so the fingerprint, is the same
    "description": "moved to another cluster",
}


def _volatile_paths(model: type, prefix: str = "") -> set[str]:
    from pydantic import BaseModel

    out: set[str] = set()
    top = getattr(model, "volatile_fields", frozenset())
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        typ = field.annotation
        if name in top:
            sub = typ if isinstance(typ, type) and issubclass(typ, BaseModel) else None
            out |= _all_paths(sub, f"{path}.") if sub else {path}
        elif isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("volatile"):
            out.add(path)
        elif isinstance(typ, type) and issubclass(typ, BaseModel):
            out |= _volatile_paths(typ, f"{path}.")
    return out


def _all_paths(model: type, prefix: str) -> set[str]:
    return {f"{prefix}{name}" for name in model.model_fields}


def _set(data: dict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for p in parents:
        data = data.setdefault(p, {})
    data[last] = value


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for i in range(4):
        (d / f"img_{i}.png").write_bytes(make_image_bytes(color=(50 * i, 80, 160), size=(32, 32)))
    return d


def _cfg(tiny_models, images: Path, out: Path, **changes: Any) -> AnnotateConfig:
    data: dict[str, Any] = {
        "input": {"path": str(images)},
        "backend": {"name": "transformers", "model": str(tiny_models["captioner"]),
                    "sampling": {"max_tokens": 4, "seed": 0}},
        "sharding": {"shard_size": 2},
        "output_dir": str(out),
    }
    for path, value in changes.items():
        _set(data, path, value)
    return AnnotateConfig.model_validate(data)


def _excluded_paths() -> set[str]:
    """Volatile fields that the changes above leave out on purpose: none but whole blocks' members the test does not
    need to list one by one (runner.* beyond max_shard_retries; decode.processes spawns processes)."""
    return {p for p in _volatile_paths(AnnotateConfig) if p.startswith("runner.")} - {"runner.max_shard_retries"} \
        | {"decode.processes", "output_dir"}


def test_the_change_list_covers_every_volatile_field() -> None:
    paths = _volatile_paths(AnnotateConfig)
    missing = paths - set(VOLATILE_CHANGES) - _excluded_paths()
    assert not missing, f"add a changed value for {sorted(missing)}"
    assert set(VOLATILE_CHANGES) <= paths, f"not volatile: {sorted(set(VOLATILE_CHANGES) - paths)}"
    base = AnnotateConfig.model_validate({"input": {"path": "x"}, "backend": {"model": "m"}})
    assert "base_url" not in json.dumps(identity(base)) and VOLATILE == {"volatile": True}


def test_every_volatile_field_changed_resumes_and_reuses_every_shard(tiny_models, images: Path,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run(_cfg(tiny_models, images, out))
    assert first.shards_done == 2
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    again = run(_cfg(tiny_models, images, out, **VOLATILE_CHANGES))
    assert again.shards_done == 0 and again.shards_skipped == 2, "a volatile change is a resume, not a redo"
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == stamps
    assert (out / "captions.jsonl").is_file(), "the export switch took effect on the resumed run"


def test_a_changed_prompt_text_is_refused_naming_it(tiny_models, images: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    run(_cfg(tiny_models, images, out))
    monkeypatch.setitem(PROMPTS._entries, "caprl_image", "Describe this image in one sentence.")  # type: ignore[attr-defined]
    with pytest.raises(ResumeRefused, match=r"prompt\.image\.text"):
        run(_cfg(tiny_models, images, out))


def test_a_lost_manifest_never_lets_old_shards_pass_as_new(tiny_models, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(_cfg(tiny_models, images, out))
    (out / "run_manifest.json").unlink()  # as a corrupt manifest's message advises
    with pytest.raises(ResumeRefused, match="shard\\(s\\) 00000, 00001 made under another config"):
        run(_cfg(tiny_models, images, out, **{"backend.sampling.temperature": 0.3}))
    again = run(_cfg(tiny_models, images, out))  # the same config: its shards are reused
    assert again.shards_skipped == 2 and again.shards_done == 0


def test_other_package_versions_warn_and_resume(tiny_models, images: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    run(_cfg(tiny_models, images, out))
    manifest = json.loads((out / "run_manifest.json").read_text())
    manifest["packages"]["transformers"] = "4.0.0"
    (out / "run_manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="caprl_kit"):
        again = run(_cfg(tiny_models, images, out))
    assert again.shards_skipped == 2
    assert any("transformers 4.0.0 ->" in r.getMessage() for r in caplog.records), caplog.text
