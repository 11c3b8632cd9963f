"""Training over the cached features: `train`, `evaluate`, `predict` and `compare`.

- `run.py`: the stage itself (`train`, `predict`): opens the run folder, runs the loop and
  writes the run's results; `prepare.py` is what it does first with nothing written (the
  settings, the stores opened and checked, the model built), which `dry_run.py` (`train
  --dry-run`) runs too; `run_folder.py` names, writes and reads the run folder's own files;
  `commands.py` is the command line.
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
