"""Runners map a worker over shards: in-process, a process pool, or Ray Data. Same worker code for all."""

from caprl_kit.registry import Registry

RUNNERS = Registry("runner")
RUNNERS.register("local", target="caprl_kit.runners.local:run_local")
