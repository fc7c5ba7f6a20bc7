"""Model helpers: the tiny random-weight model factory used by tests and the offline demo."""
