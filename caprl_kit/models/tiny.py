"""Build tiny random-weight models from nothing on disk: real Qwen architectures, a locally trained tokenizer.

- ``captioner``: Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``) with image and video processors and a
  Qwen-style chat template;
- ``answerer``: a Qwen2 (or Qwen3) causal LM sharing the same tokenizer.

Dimensions follow what vLLM's CPU kernels accept: attention head size 64 in the text decoder and in the vision
tower, ``mrope_section`` summing to head_dim/2. Deterministic by seed; a few MB each. Loaded back with the same
``from_pretrained(path)`` code that loads real hub models.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caprl_kit.errors import ConfigError, ConfigIssue
from caprl_kit.io.fs import staged_dir
from caprl_kit.log import get_logger

log = get_logger(__name__)

TOKENIZER_KINDS = ("bpe", "words")
ANSWERER_ARCHS = ("qwen2", "qwen3")

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

#: Qwen2-VL-style chat template: string or typed-part content, <image>/<video> parts become vision pads.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' or 'image' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if not (loop.last and message['role'] == 'assistant' and continue_final_message) %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "gray", "pink", "brown", "cyan"]
SHAPES = ["circle", "square", "triangle", "star", "rectangle", "ellipse", "cross", "diamond"]
PLACES = ["left", "right", "top", "bottom", "center", "corner", "middle", "upper", "lower"]
WORDS = (
    "a an the of in on at with and or is are there image picture video frame shows contains background "
    "foreground large small big tiny bright dark two three four five one six seven eight many several "
    "what which where how color shape object answer question option caption describe detail please based "
    "can not cannot none above the answer is correct letter only text man woman dog cat car tree house "
    "sky water road person people standing sitting walking running holding near next to behind front "
    "chart bar line value title axis number percent total year table document page"
).split()


def tokenizer_corpus(seed: int = 0, n_lines: int = 4000) -> list[str]:
    """Synthetic text covering the demo's vocabulary, CapRL prompts and MCQ layouts."""
    from caprl_kit.prompts import CAPRL_IMAGE, CAPRL_VIDEO_SIMPLE, CAPRL_VIDEO_TIMESTAMPED

    rng = random.Random(seed)
    lines = [CAPRL_IMAGE, CAPRL_VIDEO_SIMPLE, CAPRL_VIDEO_TIMESTAMPED]
    vocab = COLORS + SHAPES + PLACES + WORDS
    for _ in range(n_lines):
        kind = rng.random()
        if kind < 0.5:
            lines.append(
                f"A {rng.choice(COLORS)} {rng.choice(SHAPES)} at the {rng.choice(PLACES)} and a "
                f"{rng.choice(COLORS)} {rng.choice(SHAPES)} on the {rng.choice(PLACES)}."
            )
        elif kind < 0.8:
            opts = rng.sample(COLORS, 4)
            lines.append(
                f"#### 1. **What color is the {rng.choice(SHAPES)}?**\n   - A) {opts[0]}\n   - B) {opts[1]}\n"
                f"   - C) {opts[2]}\n   - D) {opts[3]}\n   - E) Can not answer based on the caption\n"
                f"**Answer:** B) {opts[1]}\nThe answer is {rng.choice('ABCDEF')}."
            )
        else:
            lines.append(
                " ".join(rng.choice(vocab) for _ in range(12)) + f" [0{rng.randint(0, 9)}:{rng.randint(10, 59)}]"
            )
    return lines


def word_vocabulary() -> list[str]:
    """The closed vocabulary of the word-level tokenizer: the synthetic task's words, CapRL prompt words, digits
    and punctuation, then the video task's words and whole ``[00:0N]`` timestamps (appended, so the image task's
    token ids stay as they were)."""
    from caprl_kit.prompts import CAPRL_IMAGE
    from caprl_kit.synthetic import COLORS as SCENE_COLORS, POSITIONS, SHAPES as SCENE_SHAPES
    from caprl_kit.synthetic_video import TIMESTAMP_TOKENS, VIDEO_WORDS

    words = set(COLORS + SHAPES + PLACES + WORDS + list(SCENE_COLORS) + SCENE_SHAPES + list(POSITIONS))
    words |= set(CAPRL_IMAGE.lower().rstrip(".").split()) | {"A", "The", "Please"}
    return sorted(words) + list("0123456789.,:;?!()[]-") + VIDEO_WORDS + TIMESTAMP_TOKENS


def train_tokenizer(out_dir: Path, vocab_size: int = 1024, seed: int = 0, kind: str = "bpe"):
    """Byte-level BPE trained on the synthetic corpus (``kind="bpe"``, saved as a Qwen2 tokenizer), or a
    word-level tokenizer over ``word_vocabulary()`` (``kind="words"``: a ~150-word closed vocabulary that small
    RL experiments learn fast), both with Qwen's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "words":
        from caprl_kit.synthetic_video import TIMESTAMP_TOKENS

        vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, "<unk>", *word_vocabulary()])}
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
        tok.add_special_tokens(SPECIAL_TOKENS)
        tok.add_tokens(TIMESTAMP_TOKENS)  # whole tokens (their vocabulary ids), matched before the word split
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            unk_token="<unk>",
            additional_special_tokens=SPECIAL_TOKENS[1:],
            model_max_length=4096,
            padding_side="left",
            clean_up_tokenization_spaces=False,
        )
        fast.chat_template = CHAT_TEMPLATE
        fast.save_pretrained(out_dir)
        return fast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=4096,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    # make the saved tokenizer load as Qwen2's class (what Qwen processors and vLLM expect)
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return fast


@dataclass(frozen=True)
class TinyDims:
    hidden: int = 128
    heads: int = 2  # head_dim 64: the smallest size vLLM's CPU attention kernels accept
    kv_heads: int = 1
    layers: int = 2
    intermediate: int = 256
    vision_depth: int = 2
    vision_hidden: int = 128
    vision_heads: int = 2
    vision_intermediate: int = 256


def check_options(seed: int = 0, answerer_arch: str = "qwen2", tokenizer: str = "bpe") -> None:
    """The factory's options, all problems in one ``ConfigError`` (before anything is written)."""
    issues = []
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        issues.append(ConfigIssue("seed", f"must be a non-negative integer, got {seed!r}"))
    if answerer_arch not in ANSWERER_ARCHS:
        issues.append(
            ConfigIssue(
                "answerer_arch", f"unknown architecture {answerer_arch!r}", f"use one of {', '.join(ANSWERER_ARCHS)}"
            )
        )
    if tokenizer not in TOKENIZER_KINDS:
        issues.append(
            ConfigIssue(
                "tokenizer", f"unknown tokenizer kind {tokenizer!r}", f"use one of {', '.join(TOKENIZER_KINDS)}"
            )
        )
    if issues:
        raise ConfigError(issues)


def _prepare(out: Path, seed: int, kind: str) -> tuple[Any, dict[str, int]]:
    """Write the tokenizer into ``out``; return (tokenizer, special-token ids)."""
    from transformers import AutoTokenizer

    train_tokenizer(out, seed=seed, kind=kind)
    tokenizer = AutoTokenizer.from_pretrained(out)
    return tokenizer, _special_ids(tokenizer)


def _text_dims(dims: TinyDims, tokenizer: Any, ids: dict[str, int]) -> dict[str, Any]:
    """Decoder settings shared by the captioner's language model and the answerer."""
    return dict(
        vocab_size=_vocab_size(tokenizer),
        hidden_size=dims.hidden,
        intermediate_size=dims.intermediate,
        num_hidden_layers=dims.layers,
        num_attention_heads=dims.heads,
        num_key_value_heads=dims.kv_heads,
        max_position_embeddings=4096,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=True,
    )


def _save(model: Any, ids: dict[str, int], out: Path) -> None:
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)


def _special_ids(tokenizer) -> dict[str, int]:
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}


def _vocab_size(tokenizer) -> int:
    n = len(tokenizer)
    return ((n + 63) // 64) * 64


def build_captioner(
    out_dir: str | Path,
    seed: int = 0,
    dims: TinyDims = TinyDims(),
    min_pixels: int = 3136,
    max_pixels: int = 50176,
    tokenizer: str = "bpe",
) -> Path:
    """A tiny random Qwen2.5-VL with processor (image + video) and chat template at ``out_dir`` (built under a
    temporary name and renamed when complete)."""
    check_options(seed, tokenizer=tokenizer)
    with staged_dir(out_dir) as tmp:
        _build_captioner(tmp, seed, dims, min_pixels, max_pixels, tokenizer)
    log.info("tiny captioner written to %s", out_dir)
    return Path(out_dir)


def _build_captioner(out: Path, seed: int, dims: TinyDims, min_pixels: int, max_pixels: int, tokenizer: str) -> None:
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )

    # by its module: transformers' top-level type stubs do not list Qwen2VLVideoProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tokenizer, ids = _prepare(out, seed, tokenizer)
    head_dim = dims.hidden // dims.heads
    config = Qwen2_5_VLConfig(
        text_config=dict(
            **_text_dims(dims, tokenizer, ids),
            max_window_layers=dims.layers,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": _mrope_section(head_dim),
            },
        ),
        vision_config=dict(
            depth=dims.vision_depth,
            hidden_size=dims.vision_hidden,
            intermediate_size=dims.vision_intermediate,
            num_heads=dims.vision_heads,
            out_hidden_size=dims.hidden,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[dims.vision_depth - 1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.do_sample = True
    _save(model, ids, out)
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2),
        video_processor=Qwen2VLVideoProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)


def build_answerer(
    out_dir: str | Path, seed: int = 0, dims: TinyDims = TinyDims(), arch: str = "qwen2", tokenizer: str = "bpe"
) -> Path:
    """A tiny random Qwen2 (``arch="qwen3"``: Qwen3) causal LM with the shared tokenizer at ``out_dir`` (built
    under a temporary name and renamed when complete)."""
    check_options(seed, answerer_arch=arch, tokenizer=tokenizer)
    with staged_dir(out_dir) as tmp:
        _build_answerer(tmp, seed, dims, arch, tokenizer)
    log.info("tiny answerer (%s) written to %s", arch, out_dir)
    return Path(out_dir)


def _build_answerer(out: Path, seed: int, dims: TinyDims, arch: str, tokenizer: str) -> None:
    import torch
    from transformers import (
        PretrainedConfig,
        PreTrainedModel,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    tokenizer, ids = _prepare(out, seed, tokenizer)
    common = _text_dims(dims, tokenizer, ids)
    config: PretrainedConfig
    cls: type[PreTrainedModel]
    if arch == "qwen2":
        config, cls = Qwen2Config(**common), Qwen2ForCausalLM
    else:
        config, cls = Qwen3Config(head_dim=dims.hidden // dims.heads, **common), Qwen3ForCausalLM
    torch.manual_seed(seed + 1)
    _save(cls(config).eval(), ids, out)


def _mrope_section(head_dim: int) -> list[int]:
    half = head_dim // 2  # Qwen2.5-VL uses [16, 24, 24] for head_dim 128: 1/4 temporal, 3/8 height, 3/8 width
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def build_tiny_models(
    out_dir: str | Path, seed: int = 0, answerer_arch: str = "qwen2", tokenizer: str = "bpe"
) -> dict[str, Path]:
    """Both tiny models under ``out_dir`` (``captioner/``, ``answerer/``); reuses a finished build.
    ``tokenizer="words"`` gives them the closed word-level vocabulary (transformers only; vLLM needs BPE).

    Each model is built under a temporary name and renamed when complete, and ``tiny_models.json`` (what marks the
    build finished) is removed first and written last: a killed build leaves nothing that looks complete."""
    from caprl_kit.io.fs import atomic_write_text, url_to_fs

    check_options(seed, answerer_arch, tokenizer)
    out = Path(out_dir)
    marker = out / "tiny_models.json"
    meta = {"seed": seed, "answerer_arch": answerer_arch, "version": 2, "tokenizer": tokenizer}
    paths = {"captioner": out / "captioner", "answerer": out / "answerer"}
    if marker.is_file() and all(p.is_dir() for p in paths.values()) and _read_json(marker) == meta:
        return paths
    out.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    build_captioner(paths["captioner"], seed=seed, tokenizer=tokenizer)
    build_answerer(paths["answerer"], seed=seed, arch=answerer_arch, tokenizer=tokenizer)
    fs, path = url_to_fs(str(marker.resolve()))
    atomic_write_text(fs, path, json.dumps(meta))
    return paths


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None
