"""caprl evaluate."""
