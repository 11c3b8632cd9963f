"""Several seeds of one training config: which seeds a job trains.

`train --seeds 1-5` (or `1,2,3,4,5`, or `1-3,7`) makes one run per seed, each its own
fingerprinted folder because `train.seed` is part of the config. Run as a scheduler job array,
each array task trains only its own seed: `SLURM_ARRAY_TASK_ID` (minus `SLURM_ARRAY_TASK_MIN`)
or `JOB_COMPLETION_INDEX` picks the position in the list, the same variables the shard options
of the preprocessing stages read. Outside an array the job trains every seed, one after another.
"""

from __future__ import annotations

import os
from typing import Sequence

from ...errors import InputError
from ...shards import resolve_shard

ARRAY_VARIABLES = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")


def parse_seeds(text: str) -> list[int]:
    """"1,2,3", "1-5", "1-3,7" -> the seeds in the order given; repeats are refused."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        try:
            if "-" in part[1:]:
                first, last = (int(x) for x in part.split("-", 1))
                if last < first:
                    raise ValueError
                seeds.extend(range(first, last + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise InputError(f"cannot read '{part}' in --seeds {text}", field="--seeds",
                             hint="give seeds as 1,2,3,4,5 or a range such as 1-5") from None
    if len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds {text} names a seed twice", field="--seeds")
    return seeds


def job_seeds(seeds: Sequence[int], seed_index: int | None = None) -> list[int]:
    """The seeds this job trains: the one at `seed_index` (default: the job array's index),
    or all of them when the job is not part of an array."""
    if seed_index is None and not any(name in os.environ for name in ARRAY_VARIABLES):
        return list(seeds)
    _, index = resolve_shard(len(seeds), seed_index)
    return [seeds[index]]
