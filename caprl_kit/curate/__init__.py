"""caprl curate."""
