"""Deterministic sharding by id, so a scheduler's job array splits a stage's work."""

from __future__ import annotations

import hashlib
import os

from .errors import InputError


def shard_of(key: str, num_shards: int) -> int:
    """The shard (0..num_shards-1) that owns `key`; stable across runs and machines."""
    if num_shards <= 1:
        return 0
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % num_shards


def resolve_shard(num_shards: int | None, shard_index: int | None) -> tuple[int, int]:
    """`(num_shards, shard_index)` from the options, else from the scheduler's environment.

    Slurm job arrays give `SLURM_ARRAY_TASK_COUNT` and `SLURM_ARRAY_TASK_ID` (offset by
    `SLURM_ARRAY_TASK_MIN`); Kubernetes indexed Jobs give `JOB_COMPLETION_INDEX` (then
    `--num-shards` must be given).
    """
    env = os.environ
    if num_shards is None and "SLURM_ARRAY_TASK_COUNT" in env:
        num_shards = int(env["SLURM_ARRAY_TASK_COUNT"])
    if shard_index is None:
        if "SLURM_ARRAY_TASK_ID" in env:
            shard_index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        elif "JOB_COMPLETION_INDEX" in env:
            shard_index = int(env["JOB_COMPLETION_INDEX"])
    num_shards = num_shards or 1
    shard_index = shard_index or 0
    if not 0 <= shard_index < num_shards:
        raise InputError(f"shard index {shard_index} is outside 0..{num_shards - 1}",
                         hint="pass --shard-index below --num-shards")
    return num_shards, shard_index
