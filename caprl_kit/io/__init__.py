"""Shard I/O shared by every command: fsspec helpers, sharding, Parquet shards, stats, run directories."""
