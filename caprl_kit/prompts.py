"""Named prompts (spec §4). ``PROMPTS.get(name)`` returns the text; configs refer to prompts by name."""

from __future__ import annotations

from caprl_kit.registry import Registry

PROMPTS = Registry("prompt")

#: CapRL's training, evaluation and annotation prompt for images [R0].
CAPRL_IMAGE = "Please describe this image in detail."
#: The simpler video alternative [R0].
CAPRL_VIDEO_SIMPLE = "Please describe this video in detail."
#: CapRL++ timestamped video prompt (CapRL-Video-QA-20K training prompt; paraphrased in spec §4).
CAPRL_VIDEO_TIMESTAMPED = (
    "You are a video captioner. Describe this video in strictly chronological order and in great detail. Cover:\n"
    "1. Key Visuals: the main characters' clothing, colors and gender, and prominent objects.\n"
    "2. Actions & Timestamps: specific movements; anchor distinct actions, events and state changes to exact "
    "timestamps in the format [mm:ss] or [mm:ss - mm:ss].\n"
    "3. Sequence: the order of events, noting what happens simultaneously and what happens sequentially.\n"
    "4. Setting: the background and the lighting.\n"
    "The goal: someone who cannot see the video can build an exact mental timeline from your description.\n"
    "Example format: [00:00 - 00:05] A man wearing a red jacket stands by the window. [00:06] He suddenly turns "
    "around and [00:08 - 00:12] walks quickly towards a wooden desk."
)

PROMPTS.register("caprl_image", CAPRL_IMAGE)
PROMPTS.register("caprl_video", CAPRL_VIDEO_SIMPLE)
PROMPTS.register("caprl_video_timestamped", CAPRL_VIDEO_TIMESTAMPED)

#: The llm claim splitter's instruction; the caption follows it ("Caption: ...").
CLAIM_SPLIT = (
    "Split the caption below into atomic claims: short, self-contained statements that each state one fact about "
    "the image or video. Repeat the subject in every claim instead of using a pronoun, and add nothing the caption "
    "does not say. Write one claim per line and nothing else."
)
#: The faithfulness verifier's question about one claim ("Statement: ..." follows), by its evidence.
CLAIM_VERIFY_IMAGE = "Is this statement true of the image? Answer yes or no."
CLAIM_VERIFY_VIDEO = "Is this statement true of the video? Answer yes or no."
CLAIM_VERIFY_REFERENCE = "Is this statement true according to the reference description? Answer yes or no."

PROMPTS.register("claim_split", CLAIM_SPLIT)
PROMPTS.register("claim_verify_image", CLAIM_VERIFY_IMAGE)
PROMPTS.register("claim_verify_video", CLAIM_VERIFY_VIDEO)
PROMPTS.register("claim_verify_reference", CLAIM_VERIFY_REFERENCE)
