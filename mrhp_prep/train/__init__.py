"""Training over the cached features: `train`, `evaluate`, `predict` and `compare`.

- `run.py`: the stage itself (`train`, `predict`): opens the stores, builds the model, runs the
  loop and writes the run folder; `commands.py` is its command line; `dry_run.py` is
  `train --dry-run` (the config and the model's parameters, nothing written).
- `data/`: the data side: the stores joined by id (`stores`), the review dataset and batches
  (`dataset`), pair and group sampling (`sampling`), store coverage and input checks.
- `models/`: SANCL, MCL and MM-SS, their layers, losses and the text encoder they fine-tune.
- `loop/`: the training loop (`trainer`), checkpoints, DDP, seeds, the in-loop NaN guards and the
  provenance record of a run.
- `settings/`: the training config: model defaults, presets, `--config` and `--set`, their types
  and ranges.
- `report/`: metrics, the predictions file, the run's pictures, and `compare` with the papers'
  tables.
"""
