"""Answerer prompts for the QA reward (spec §2.2): instruction, two worked examples, then the caption and question.
The assistant turn is prefilled with "The answer is" so the answerer completes it with a letter.

The official video template is indented by 8 spaces on every line (a quirk of the source); ``compat="official"``
reproduces it."""

from __future__ import annotations

PREFILL = "The answer is"

IMAGE_TEMPLATE = """You are given a caption of an image and a multiple-choice question about that image. Answer the question strictly based on the caption: ignore external knowledge and assume nothing the caption does not state. If the caption does not contain the information needed, choose "Can not answer based on the caption".

Example 1:
Caption: <Caption Start> A woman in a red coat walks a black dog along a snowy street. <Caption End>
Question: What color is the dog?
   - A) White
   - B) Brown
   - C) Black
   - D) Red
   - E) Can not answer based on the caption
The answer is C.

Example 2:
Caption: <Caption Start> A man stands in front of an old building with a flag on its roof. <Caption End>
Question: What are the colors of the British flag in the image?
   - A) Red, white and blue
   - B) Green and yellow
   - C) Black and white
   - D) Orange
   - E) Can not answer based on the caption
The answer is E.

Now, answer the question based on the following caption:
Caption: <Caption Start> {caption} <Caption End>
Question: {question}"""

VIDEO_TEMPLATE = """You are given a caption of a video and a multiple-choice question about that video. Answer the question strictly based on the caption: ignore external knowledge and assume nothing the caption does not state. Pay close attention to timestamps (e.g., [mm:ss]) and the sequence of events. If the caption does not contain the information needed, choose "Can not answer based on the caption".

Example 1:
Caption: <Caption Start> [00:00 - 00:04] A boy in a blue shirt opens a door. [00:05] He picks up a ball and [00:07 - 00:10] throws it to a dog. <Caption End>
Question: What does the boy do right after picking up the ball?
   - A) Opens a door
   - B) Throws it to a dog
   - C) Sits down
   - D) Leaves the room
   - E) Can not answer based on the caption
The answer is B.

Example 2:
Caption: <Caption Start> [00:00 - 00:06] A woman waters plants on a balcony. [00:07] She goes inside. <Caption End>
Question: Why does the woman go inside?
   - A) It starts raining
   - B) Her phone rings
   - C) She is cold
   - D) She finished watering
   - E) Can not answer based on the caption
The answer is E.

Now, answer the question based on the following caption:
Caption: <Caption Start> {caption} <Caption End>
Question: {question}"""


def answer_prompt(caption: str, question_full: str, task: str = "image", compat: str = "fixed") -> str:
    template = VIDEO_TEMPLATE if task == "video" else IMAGE_TEMPLATE
    text = template.format(caption=caption, question=question_full)
    if compat == "official" and task == "video":
        text = "\n".join("        " + line for line in text.split("\n"))
    return text
