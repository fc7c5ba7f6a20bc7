"""Caption hygiene monitors on crafted captions: every flag hit and missed, the cleaned caption, the rates."""

from __future__ import annotations

import pytest

from caprl_kit.monitors import FLAGS, MonitorConfig, caption_flags, clean_caption, flag_counts, flag_rates, repeat_share

PLAIN = "A red car is parked beside an oak tree. Two children walk past it on the sidewalk."

CASES = [
    # (caption, finish reason, expected flags)
    (PLAIN, "stop", []),
    (PLAIN, "length", ["truncated"]),
    (PLAIN, None, []),
    ("", "stop", ["empty"]),
    ("   \n ", "stop", ["empty"]),
    ("a red square at the left . the left . the left . the left . the left . the left .", "stop", ["repetitive"]),
    ("The red square sits at the left. The blue circle sits at the right. A green triangle is in the middle.", "stop",
     []),  # the same short words recur, but no phrase loops
    ("Based on the provided video frames, a man walks a dog through a park. He stops at a bench.", "stop",
     ["boilerplate_opener"]),
    ("The image shows a red car parked beside an oak tree. Children walk past.", "stop", ["boilerplate_opener"]),
    ("In this image, a red car is parked beside an oak tree. Children walk past.", "stop", ["boilerplate_opener"]),
    ("An image editor shows a red car on its screen. Children walk past.", "stop", []),  # not an opener
    ("The image quality is poor, but a red car is visible. Children walk past.", "stop", []),
    (PLAIN + " This detailed description captures all the key elements of the scene.", "stop", ["meta_ending"]),
    (PLAIN + " Overall, the scene is calm and pleasant.", "stop", ["meta_ending"]),
    (PLAIN + " I hope this helps!", "stop", ["meta_ending"]),
    ("A poster reads: this description is a lie. A man looks at it in a hallway.", "stop", []),  # not the last
    ("Overall, a calm street.", "stop", []),  # one sentence: nothing else to describe the media
    ("The image shows a street. The street is empty. Overall, this description covers the street.", "length",
     ["truncated", "boilerplate_opener", "meta_ending"]),
]


@pytest.mark.parametrize(("text", "finish", "expected"), CASES)
def test_flags_on_crafted_captions(text: str, finish: str | None, expected: list[str]) -> None:
    assert caption_flags(text, finish) == expected


def test_every_flag_is_hit_and_missed_by_the_table() -> None:
    for flag in FLAGS:
        assert any(flag in e for _, _, e in CASES) and any(flag not in e for _, _, e in CASES), flag


def test_repeat_share_and_its_settings() -> None:
    loop = "the left . " * 10
    assert repeat_share(loop) > 0.8 and repeat_share(PLAIN) == 0.0
    assert repeat_share("one two") == 0.0  # too short for a 4-gram pair
    text = "a cat sat on a mat and a cat sat on a rug"  # "a cat sat on", "cat sat on a" repeated: 2 of 10 4-grams
    assert repeat_share(text) == pytest.approx(0.2)
    assert caption_flags(text, cfg=MonitorConfig(max_repeat_share=0.15)) == ["repetitive"]
    assert caption_flags(text) == []


def test_custom_patterns_replace_the_defaults() -> None:
    cfg = MonitorConfig(openers=[r"voici"], meta_endings=[r"\bfin\b"])
    assert caption_flags("The image shows a car. Fin.", cfg=cfg) == ["meta_ending"]
    assert caption_flags("Voici une voiture. Elle est rouge.", cfg=cfg) == ["boilerplate_opener"]


def test_clean_removes_opener_and_meta_sentences_but_never_everything() -> None:
    raw = ("Based on the provided video frames, a man walks a dog through a park. He stops at a bench. "
           "This description captures the key moments. I hope this helps.")
    assert clean_caption(raw) == "A man walks a dog through a park. He stops at a bench."
    assert clean_caption("The image shows a red car. It is parked.") == "A red car. It is parked."
    assert clean_caption(PLAIN) == PLAIN
    assert clean_caption("The image shows") == "The image shows"  # nothing after the opener: kept as it was
    assert clean_caption(None) is None


def test_rates_from_counts() -> None:
    flags = [caption_flags(t, f) for t, f, _ in CASES]
    counts = flag_counts(flags)
    assert counts["captions"] == len(CASES)
    rates = flag_rates(dict(counts))
    assert rates["empty"] == pytest.approx(2 / len(CASES)) and set(rates) == set(FLAGS)
    assert flag_rates({}) == {f: 0.0 for f in FLAGS}
