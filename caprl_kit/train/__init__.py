"""caprl train."""
