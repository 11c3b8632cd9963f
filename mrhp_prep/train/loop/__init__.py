"""The training loop: trainer, checkpoints, distributed runs, seeds, in-loop guards."""
