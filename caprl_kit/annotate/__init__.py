"""caprl annotate."""
