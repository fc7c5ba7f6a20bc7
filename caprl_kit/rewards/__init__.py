"""CapRL rewards: QA accuracy through a text-only answerer, length, timestamp format, VL judge."""
