"""Preference pairs from the CapRL QA reward: ``caprl train pairs`` (sample, score, pair) for ``method: dpo``."""
