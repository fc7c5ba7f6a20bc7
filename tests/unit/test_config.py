from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from caprl_kit.config import apply_overrides, builtin_pipelines, load_config, load_yaml, resolve_config_path
from caprl_kit.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture()
def base(tmp_path: Path) -> Path:
    write(tmp_path / "common.yaml", """
        backend:
          name: transformers
          model: /models/tiny-vl
          sampling: {temperature: 0.7, max_tokens: 64}
        sharding: {shard_size: 10}
    """)
    return write(tmp_path / "job.yaml", """
        kind: annotate
        include: [common.yaml]
        input: {path: /data/images}
        backend:
          sampling: {temperature: 0.2}
    """)


def test_include_merges_deeply_and_later_keys_win(base: Path) -> None:
    cfg = load_config(base)
    assert cfg.backend.model == "/models/tiny-vl"
    assert cfg.backend.sampling.temperature == 0.2  # the including file wins
    assert cfg.backend.sampling.max_tokens == 64  # sibling keys from the include survive
    assert cfg.sharding.shard_size == 10


def test_overrides_set_parse_yaml_scalars_and_delete(base: Path) -> None:
    cfg = load_config(base, ["backend.sampling.temperature=0.6", "backend.sampling.stop=[a, b]", "~sharding"])
    assert cfg.backend.sampling.temperature == 0.6
    assert cfg.backend.sampling.stop == ["a", "b"]
    assert cfg.sharding.shard_size == 1000  # deleted -> default


def test_override_errors_are_reported() -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides({"a": 1}, ["novalue", "~missing.key", "a.b=3"])
    paths = [i.path for i in err.value.issues]
    assert paths == ["novalue", "missing.key", "a.b"]


def test_all_errors_at_once_with_paths_and_suggestions(base: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(base, ["backend.name=trnasformers", "backend.sampling.temperature=hot", "backend.sampling.max_tokns=5"])
    issues = {i.path: i for i in err.value.issues}
    assert set(issues) == {"backend.name", "backend.sampling.temperature", "backend.sampling.max_tokns"}
    assert "did you mean 'transformers'" in issues["backend.name"].message
    assert "'hot'" in issues["backend.sampling.temperature"].message
    assert issues["backend.sampling.max_tokns"].hint == "did you mean 'max_tokens'?"
    text = str(err.value)
    assert "3 problem(s)" in text


def test_range_checks_name_the_key(base: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(base, ["backend.sampling.n=0", "sharding.shard_size=-1"])
    assert {i.path for i in err.value.issues} == {"backend.sampling.n", "sharding.shard_size"}


def test_kind_mismatch_and_missing_kind(tmp_path: Path, base: Path) -> None:
    with pytest.raises(ConfigError, match="is a 'annotate' pipeline, not 'curate'"):
        load_config(base, kind="curate")
    nokind = write(tmp_path / "nokind.yaml", "input: {path: x}\n")
    with pytest.raises(ConfigError, match="kind"):
        load_config(nokind)


def test_include_cycle_and_bad_yaml(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "include: b.yaml\nkind: annotate\n")
    write(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_yaml(tmp_path / "a.yaml")
    write(tmp_path / "bad.yaml", "kind: [annotate\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")


def test_builtin_names_resolve_and_typos_get_suggestions() -> None:
    names = builtin_pipelines()
    assert "annotate/caption_images_qwen25vl3b" in names
    assert resolve_config_path("annotate/caption_images_qwen25vl3b").is_file()
    with pytest.raises(ConfigError) as err:
        resolve_config_path("annotate/caption_image_qwen25vl3b")
    assert "did you mean 'annotate/caption_images_qwen25vl3b'" in str(err.value)


def test_fingerprint_ignores_volatile_fields(base: Path) -> None:
    a = load_config(base, ["output_dir=/tmp/a", "runner.num_workers=4"])
    b = load_config(base, ["output_dir=/tmp/b"])
    c = load_config(base, ["backend.sampling.temperature=0.9"])
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()


def test_resolved_dump_round_trips(base: Path, tmp_path: Path) -> None:
    from caprl_kit.config import dump_config, validate
    from caprl_kit.annotate.config import AnnotateConfig

    cfg = load_config(base)
    again = validate(AnnotateConfig, yaml.safe_load(dump_config(cfg)))
    assert again == cfg
