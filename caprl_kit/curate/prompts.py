"""Curation prompts: the MCQ generation prompt (system; spec §1.2, P1 Fig. 18 structure) and the answering template
(spec §1.4)."""

GENERATION_PROMPT = """You are an expert at writing multiple-choice questions about images. Look at the image carefully and write five challenging multiple-choice questions that can only be answered by looking at the image: each must be answered based on the image, not on common sense or general knowledge. Cover different aspects (objects, attributes, counts, text, spatial relations, actions). Each question has four options and exactly one correct answer.

Use exactly this format:

#### 1. **What color is the umbrella held by the woman on the left?**
   - A) Blue
   - B) Red
   - C) Green
   - D) Yellow
**Answer:** B) Red
------
#### 2. **How many people are sitting on the bench?**
   - A) One
   - B) Two
   - C) Three
   - D) Four
**Answer:** C) Three
------"""

ANSWER_TEMPLATE = "{question}. Answer the question with only the correct letter"

CAPTION_EVIDENCE_TEMPLATE = "Caption: <Caption Start> {caption} <Caption End>\nQuestion: {question}\nAnswer the question with only the correct letter."
