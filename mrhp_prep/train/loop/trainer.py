"""The training loop, the same for every model: ranking loss from the scores + the model's
auxiliary loss, Adam, ReduceLROnPlateau and early stopping on a dev metric, checkpoints that
resume a killed run to the same state, AMP on GPUs, DDP under torchrun.

A model only has to return a `ModelOutput`; `on_epoch_end(epoch)` is called after each
training epoch.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from ...errors import InputError
from ...progress import progress
from . import checkpoints
from .guards import check_batch, check_losses, check_scores, finite_inputs
from .checkpoints import load_checkpoint_state
from ..data.dataset import PER_PRODUCT_KEYS, Collate, DataConfig, ReviewDataset, SplitTable
from .distributed import Distributed
from ..models.losses import group_hinge_loss
from ..report.metrics import METRICS, evaluate_rankings, rank_within_products
from ..models.base import RankingModel
from ..models.text_encoder import parameter_groups
from ..data.sampling import (GroupBatchSampler, SamplingConfig, evaluation_batches,
                             sampled_dev_rows)
from ..run_folder import checkpoint_dir
from ..settings.typed_sections import section_fields

log = logging.getLogger(__name__)


class TrainSettings(section_fields("train")):
    """The `train:` section of a training config: one field per setting declared in
    `settings/training_settings.py` (docs/settings.md)."""


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0                 # epochs completed
    step_in_epoch: int = 0         # steps done in the current epoch
    global_step: int = 0
    best_value: float | None = None
    best_epoch: int = 0            # 1-based epoch of the best dev metric (0 = none yet)
    bad_epochs: int = 0            # epochs since the dev metric last improved
    stopped_early: bool = False
    sums: dict = field(default_factory=dict)     # running sums of the current epoch
    history: list = field(default_factory=list)  # one record per finished epoch


def amp_settings(device: torch.device, amp: str | bool) -> tuple[bool, torch.dtype | None, bool]:
    """(autocast on, its dtype, use a GradScaler) for a device and the `train.amp` setting."""
    wanted = str(amp).lower()
    if device.type != "cuda" or wanted == "false":
        if wanted == "true" and device.type != "cuda":
            log.info("train.amp: mixed precision is used on CUDA devices only; training in float32")
        return False, None, False
    if torch.cuda.is_bf16_supported():
        return True, torch.bfloat16, False
    return True, torch.float16, True


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on `device`, stored float16 features widened to float32 there, and
    per-product entries (`Collate(share_products=True)`) given one row per review again."""
    non_blocking = device.type == "cuda"
    moved = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=non_blocking)
        moved[key] = value.float() if value.dtype == torch.float16 else value
    slots = moved.pop("product_slot", None)
    if slots is not None:
        for key in PER_PRODUCT_KEYS:
            moved[key] = moved[key].index_select(0, slots)
    return moved


def step_values(values: Mapping[str, torch.Tensor | float]) -> dict[str, float]:
    """The step's losses and the model's logs (0-d tensors, or numbers) as floats, read from
    the device in one transfer."""
    tensors = {k: v.detach().float().reshape(()) for k, v in values.items()
               if isinstance(v, torch.Tensor)}
    read = {}
    if tensors:
        device = next(iter(tensors.values())).device
        stacked = torch.stack([v.to(device) for v in tensors.values()])
        read = dict(zip(tensors, stacked.tolist()))
    return {k: read[k] if k in read else float(v) for k, v in values.items()}


def prediction_frame(table: SplitTable, scores: np.ndarray) -> pd.DataFrame:
    """product_id, review_id, label, score, rank (1 = most helpful within its product)."""
    frame = pd.DataFrame({"product_id": table.product_ids, "review_id": table.review_ids,
                          "label": table.labels.astype(np.float64),
                          "score": np.asarray(scores, dtype=np.float64)})
    frame["rank"] = rank_within_products(frame)
    return frame


@torch.no_grad()
def score_reviews(model: RankingModel, dataset: ReviewDataset, collate: Collate,
                  device: torch.device, batch_rows: int, num_workers: int = 0,
                  amp: tuple = (False, None, False),
                  distributed: Distributed | None = None) -> pd.DataFrame:
    """Scores of every review of `dataset` (each rank scores its share of products)."""
    distributed = distributed or Distributed()
    batches = evaluation_batches(dataset.table.rows_by_product(), batch_rows,
                                 distributed.rank, distributed.world_size)
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    rows, scores = [np.zeros(0, np.int64)], [np.zeros(0, np.float64)]
    for batch in loader:
        moved = to_device(batch, device)
        finite = finite_inputs(moved)
        with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
            output = model(moved)
        check_batch(finite, moved, rows=batch["review_index"].tolist(), dataset=dataset,
                    what=f"scoring the {dataset.table.name} split")
        rows.append(batch["review_index"].numpy())
        scores.append(output.score.float().cpu().numpy().astype(np.float64))
    model.train(was_training)
    all_scores = np.full(len(dataset), np.nan)
    for part_rows, part_scores in distributed.gather((np.concatenate(rows),
                                                      np.concatenate(scores))):
        all_scores[part_rows] = part_scores
    return prediction_frame(dataset.table, all_scores)


def sampled_dev_set(dev_set: ReviewDataset, seed: int) -> ReviewDataset:
    """The released SANCL dev set (`data.dev_set: sampled`): pairs drawn once from `dev_set`
    (`sampling.sampled_dev_rows`); the best epoch is chosen on their metrics."""
    table = dev_set.table
    rows = sampled_dev_rows(table.labels, table.rows_by_product(), seed)
    log.info("dev set: %d sampled rows of %d reviews (data.dev_set: sampled)", len(rows),
             len(table))
    return ReviewDataset(dev_set.sources, table.subset(rows, f"{table.name} (sampled pairs)"),
                         dev_set.config)


class Trainer:
    """Trains `model` on `train_set`, choosing the best epoch on `dev_set` (on pairs sampled
    from it with `data.dev_set: sampled`).

    Files in `run_dir/checkpoints/`: last.pt (everything needed to resume: model, optimizer,
    scheduler, scaler, TrainState, every rank's RNG states), best.pt and epoch-NNN.pt (model
    weights and the epoch's record).
    """

    def __init__(self, model: RankingModel, train_set: ReviewDataset,
                 dev_set: ReviewDataset | None, config: Mapping, run_dir: Path, *,
                 device: torch.device, relevance_threshold: float,
                 distributed: Distributed | None = None, num_workers: int = 0,
                 show_progress: bool = True):
        self.settings = TrainSettings.from_config(config["train"])
        self.model_name = config["model"].get("name", type(model).__name__)
        self.sampling = SamplingConfig.from_config(config["sampling"])
        self.margin = config["loss"]["margin"]
        self.data_config = DataConfig.from_config(config["data"])
        self.distributed = distributed or Distributed()
        self.device, self.threshold = device, relevance_threshold
        if dev_set is not None and self.data_config.dev_set == "sampled":
            dev_set = sampled_dev_set(dev_set, self.settings.seed)
        self.train_set, self.dev_set = train_set, dev_set
        self.num_workers, self.show_progress = num_workers, show_progress
        self.checkpoint_dir = checkpoint_dir(run_dir)

        self.unwrapped = model.to(device)
        self.model = model
        if self.distributed.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=model.find_unused_parameters)
        s = self.settings
        # group 0: the model at lr; group 1 (fine-tuned text encoders only) at encoder_lr
        self.optimizer = torch.optim.Adam(parameter_groups(model, s.lr, s.encoder_lr), lr=s.lr,
                                          weight_decay=s.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=s.plateau_factor, patience=s.plateau_patience)
        self.amp = amp_settings(device, s.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp[2])

        table = train_set.table
        self.sampler = GroupBatchSampler(table.labels, table.rows_by_product(), self.sampling,
                                         s.batch_size, s.seed, self.distributed.rank,
                                         self.distributed.world_size)
        if len(self.sampler) == 0:     # the run checked the labels (label_groups.py)
            size = self.sampler.groups_per_batch
            raise InputError(
                f"too few training groups for {self.distributed.world_size} processes: each "
                f"process needs at least one batch of {size} group(s) per epoch",
                field="sampling", hint="train on fewer processes, or with a smaller "
                                       "train.batch_size")
        self.collate = Collate(self.data_config, share_products=True)
        self.loader = DataLoader(train_set, batch_sampler=self.sampler, collate_fn=self.collate,
                                 num_workers=num_workers, pin_memory=device.type == "cuda",
                                 persistent_workers=num_workers > 0,
                                 generator=torch.Generator().manual_seed(s.seed))
        self.state = TrainState()

    # -- one step -------------------------------------------------------------------------
    def train_step(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Forward, loss, backward, clip, optimizer step on one batch; returns the losses."""
        rows = batch["review_index"].tolist()
        batch = to_device(batch, self.device)
        finite = finite_inputs(batch)
        with torch.autocast(self.device.type, dtype=self.amp[1], enabled=self.amp[0]):
            output = self.model(batch)
            rank_loss = group_hinge_loss(output.score, batch["label"],
                                         self.sampling.group_size, self.margin)
            aux = output.aux_loss if output.aux_loss is not None else rank_loss.new_zeros(())
            loss = rank_loss + aux.float()
        # before backward: a NaN step must not reach the weights the diagnosis looks at
        where = f"epoch {self.state.epoch + 1}, step {self.state.global_step + 1}"
        check_batch(finite, batch, rows=rows, dataset=self.train_set, what=where)
        losses = step_values({"loss": loss, "rank_loss": rank_loss, "aux_loss": aux,
                              **output.logs})
        check_losses(losses, epoch=self.state.epoch + 1, step=self.state.global_step + 1,
                     model=self.unwrapped)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.settings.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.unwrapped.parameters(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return losses

    # -- epochs ---------------------------------------------------------------------------
    def fit(self) -> TrainState:
        """Train until `epochs` or early stopping; resumes from checkpoints/last.pt if there."""
        last = self.checkpoint_dir / "last.pt"
        if last.exists():
            self.load(last)
            log.info("resuming from %s: epoch %d, step %d", last, self.state.epoch + 1,
                     self.state.step_in_epoch)
        while self.state.epoch < self.settings.epochs and not self.state.stopped_early:
            self._train_epoch()
            self._end_epoch()
        return self.state

    def _train_epoch(self) -> None:
        state, settings = self.state, self.settings
        self.sampler.set_epoch(state.epoch)
        self.sampler.skip(state.step_in_epoch)
        self.model.train()
        bar = progress(total=len(self.sampler), desc=f"epoch {state.epoch + 1}/{settings.epochs}",
                       unit="step") if self.show_progress and self.distributed.is_main else None
        sums = state.sums
        tick = time.perf_counter()
        for batch in self.loader:
            loaded = time.perf_counter()
            losses = self.train_step(batch)
            done = time.perf_counter()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value
            sums["steps"] = sums.get("steps", 0) + 1
            sums["rows"] = sums.get("rows", 0) + len(batch["label"])
            sums["data_seconds"] = sums.get("data_seconds", 0.0) + loaded - tick
            sums["step_seconds"] = sums.get("step_seconds", 0.0) + done - tick
            tick = done
            state.step_in_epoch += 1
            state.global_step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{sums['loss'] / sums['steps']:.4f}",
                                rows_s=f"{sums['rows'] / max(sums['step_seconds'], 1e-9):.0f}")
            every = settings.checkpoint_every_steps
            if every and state.global_step % every == 0:
                self.save_last()
        if bar is not None:
            bar.close()

    def _end_epoch(self) -> None:
        state, settings = self.state, self.settings
        self.unwrapped.on_epoch_end(state.epoch)
        sums: dict = {}
        for part in self.distributed.gather(state.sums):     # every rank's running sums
            for key, value in part.items():
                sums[key] = sums.get(key, 0) + value
        if self.distributed.enabled:     # ranks run side by side: time is their mean
            for key in ("data_seconds", "step_seconds"):
                sums[key] = sums.get(key, 0.0) / self.distributed.world_size
        steps = max(sums.get("steps", 0), 1)
        record = {"epoch": state.epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                  "steps": int(state.sums.get("steps", 0)),   # this rank's optimizer steps
                  "seconds": round(sums.get("step_seconds", 0.0), 3),
                  "data_share": (sums.get("data_seconds", 0.0)
                                 / max(sums.get("step_seconds", 0.0), 1e-9))}
        if len(self.optimizer.param_groups) > 1:     # a fine-tuned text encoder's own rate
            record["encoder_lr"] = self.optimizer.param_groups[1]["lr"]
        for key, value in sums.items():
            if key not in {"steps", "rows", "data_seconds", "step_seconds"}:
                record[key] = value / steps
        improved = True
        if self.dev_set is not None and len(self.dev_set):
            summary = self.evaluate(self.dev_set)
            record.update({f"dev_{m}": summary[m] for m in METRICS})
            value = summary[settings.monitor]
            self.scheduler.step(value)
            improved = state.best_value is None or value > state.best_value
            if improved:
                state.best_value = value
        if improved:
            state.best_epoch, state.bad_epochs = state.epoch + 1, 0
        else:
            state.bad_epochs += 1
            patience = settings.early_stopping_patience
            state.stopped_early = bool(patience) and state.bad_epochs >= patience
        state.history.append(record)
        state.epoch += 1
        state.step_in_epoch, state.sums = 0, {}
        weights = None
        if self.distributed.is_main:      # the weights copied to the CPU once, for every file
            weights = checkpoints.model_state(self.unwrapped)
            epoch_file = self.checkpoint_dir / f"epoch-{record['epoch']:03d}.pt"
            if self.settings.epoch_checkpoints:
                checkpoints.save(epoch_file, {"model": weights, "record": record})
            if improved and self.settings.epoch_checkpoints:
                checkpoints.save_as(self.checkpoint_dir / "best.pt", epoch_file)
            elif improved:
                checkpoints.save(self.checkpoint_dir / "best.pt",
                                 {"model": weights, "record": record})
        self.save_last(weights)
        if not self.distributed.is_main:
            return
        dev = " ".join(f"{m}={100 * record[f'dev_{m}']:.2f}"
                       for m in METRICS if f"dev_{m}" in record)
        log.info("epoch %d: loss %.4f (rank %.4f, aux %.4f) %s%s", record["epoch"],
                 record.get("loss", math.nan), record.get("rank_loss", math.nan),
                 record.get("aux_loss", math.nan), dev,
                 " (best)" if improved else f" ({state.bad_epochs} without improvement)")
        if state.stopped_early:
            log.info("early stopping: dev %s has not improved for %d epochs; best epoch %d",
                     settings.monitor, state.bad_epochs, state.best_epoch)

    # -- evaluation -----------------------------------------------------------------------
    def score(self, dataset: ReviewDataset) -> pd.DataFrame:
        return score_reviews(self.unwrapped, dataset, self.collate, self.device,
                             self.settings.eval_batch_size, self.num_workers, self.amp,
                             self.distributed)

    def evaluate(self, dataset: ReviewDataset) -> dict:
        """Metric summary of a split (computed on rank 0, the same on every rank)."""
        summary = None
        frame = self.score(dataset)
        check_scores(frame, f"{dataset.table.name} split after epoch {self.state.epoch + 1}",
                     dataset)
        if self.distributed.is_main:
            summary = evaluate_rankings(frame, self.threshold).summary()
        return self.distributed.broadcast(summary)

    # -- checkpoints ----------------------------------------------------------------------
    def save_last(self, weights: dict | None = None) -> None:
        """last.pt: everything to resume from; `weights` the model state when already copied
        (at an epoch's end)."""
        rng = self.distributed.gather(checkpoints.rng_state())
        if self.distributed.is_main:
            checkpoints.save(self.checkpoint_dir / "last.pt", {
                "model": weights if weights is not None else
                checkpoints.model_state(self.unwrapped),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "state": asdict(self.state),
                "rng": rng,
            })
        self.distributed.barrier()

    def load(self, path: Path) -> None:
        payload = checkpoints.load(path)
        load_checkpoint_state(self.unwrapped, payload, path, self.model_name)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        if payload["scaler"]:
            self.scaler.load_state_dict(payload["scaler"])
        self.state = TrainState(**payload["state"])
        rng = payload["rng"]
        if len(rng) == self.distributed.world_size:
            checkpoints.set_rng_state(rng[self.distributed.rank])
        else:
            log.warning("the checkpoint was written by %d processes, this run has %d: random "
                        "states are not restored", len(rng), self.distributed.world_size)

    def load_best(self) -> int:
        """Load best.pt's weights (falls back to the current ones); returns its epoch."""
        best = self.checkpoint_dir / "best.pt"
        if not best.exists():
            return self.state.epoch
        payload = checkpoints.load(best)
        load_checkpoint_state(self.unwrapped, payload, best, self.model_name)
        return int(payload["record"]["epoch"])
