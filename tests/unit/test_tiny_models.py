"""The tiny-model factory: deterministic, real architectures, both tokenizer kinds, loadable by the back ends."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Request, SamplingParams
from caprl_kit.backends.config import BackendConfig
from caprl_kit.cli import app
from caprl_kit.models.tiny import word_vocabulary


def test_bpe_models_are_deterministic_and_real(tiny_models, tmp_path: Path) -> None:
    import json

    cfg = json.loads((Path(tiny_models["captioner"]) / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert cfg["text_config"]["hidden_size"] // cfg["text_config"]["num_attention_heads"] == 64
    result = CliRunner().invoke(app, ["models", "tiny", "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    a = (Path(tiny_models["captioner"]) / "model.safetensors").read_bytes()
    b = (tmp_path / "again" / "captioner" / "model.safetensors").read_bytes()
    assert a == b  # same seed, same weights
    size = sum(p.stat().st_size for p in (tmp_path / "again").rglob("*") if p.is_file())
    assert size < 12 * 1024 * 1024


def test_word_level_tokenizer_variant(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    result = CliRunner().invoke(app, ["models", "tiny", "--out", str(tmp_path), "--tokenizer", "words"])
    assert result.exit_code == 0, result.output
    tok = AutoTokenizer.from_pretrained(tmp_path / "captioner")
    assert tok.tokenize("A red circle at the left.") == ["A", "red", "circle", "at", "the", "left", "."]
    backend = build_backend(BackendConfig(name="transformers", model=str(tmp_path / "captioner")))
    (resp,) = backend.generate([Request.user("Please describe this image in detail.", images=[Image.new("RGB", (84, 84))],
                                             sampling=SamplingParams(max_tokens=6, seed=0))])
    vocab = set(word_vocabulary())
    assert resp.ok and all(w in vocab for w in resp.texts[0].split())
