"""Multiple-choice questions: the strict validator, parsing generator output, label normalisation, shuffling, answer
extraction."""

from caprl_kit.mcq.options import (
    CANNOT_ANSWER,
    NONE_OF_THE_ABOVE,
    Shuffled,
    extract_letter,
    normalize_choice,
    parse_easy,
    render,
    shuffle_options,
    split_question_full,
)
from caprl_kit.mcq.parse import ParseResult, Rejected, parse_generation
from caprl_kit.mcq.validate import validate_mcq

__all__ = [
    "CANNOT_ANSWER",
    "NONE_OF_THE_ABOVE",
    "ParseResult",
    "Rejected",
    "Shuffled",
    "extract_letter",
    "normalize_choice",
    "parse_easy",
    "parse_generation",
    "render",
    "shuffle_options",
    "split_question_full",
    "validate_mcq",
]
