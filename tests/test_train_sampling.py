"""Training groups (MCR's scheme and plain pairs), evaluation batches and the hinge losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrhp_prep.train.models.losses import group_hinge_loss
from mrhp_prep.train.data.sampling import (GroupBatchSampler, SamplingConfig, evaluation_batches,
                                           label_weights, sample_groups)

# two products: labels 4,3,2,1,0,0 and 2,2,1
LABELS = np.array([4, 3, 2, 1, 0, 0, 2, 2, 1], dtype=np.float32)
ROWS = [np.arange(0, 6), np.arange(6, 9)]
PRODUCT_OF = np.array([0] * 6 + [1] * 3)


def test_mcr_groups_follow_the_label_rule():
    config = SamplingConfig.from_config({"scheme": "groups", "negatives": 7, "min_label_gap": 2,
                                         "weighted": True})
    groups = sample_groups(LABELS, ROWS, config, np.random.default_rng(0))
    assert groups.shape[1] == 8
    # positives: labels 4, 3, 2 of product 0 (each has a review with label <= own - 2);
    # product 1 (labels 2, 2, 1) has no pair two levels apart
    assert sorted(groups[:, 0].tolist()) == [0, 1, 2]
    for group in groups:
        positive, negatives = group[0], group[1:]
        assert (PRODUCT_OF[negatives] == PRODUCT_OF[positive]).all()
        assert (LABELS[negatives] < LABELS[positive] - 1).all()


def test_negatives_are_weighted_by_one_minus_label_share():
    weights = label_weights(LABELS)
    # the same float64 expression, 1 - count / n: the same number
    assert weights[0.0] == 1 - 2 / 9 and weights[2.0] == 1 - 3 / 9
    # positive label 4 draws negatives among labels 2, 1, 0, 0: probabilities by weight
    labels = np.array([4, 2, 1, 0, 0, 0, 0, 0, 0, 0], dtype=np.float32)
    config = SamplingConfig(negatives=7)
    drawn = np.concatenate([sample_groups(labels, [np.arange(10)], config,
                                          np.random.default_rng(s))[0, 1:] for s in range(600)])
    w = label_weights(labels)
    expected_share_of_label_2 = w[2.0] / (w[2.0] + w[1.0] + 7 * w[0.0])
    # 4200 draws: the share's standard error is below sqrt(0.25 / 4200) = 0.0077; 0.02 is 2.6
    # of them (a sampling tolerance, not a rounding one; the draws are seeded, so the test
    # gives the same share on every machine)
    assert np.mean(drawn == 1) == pytest.approx(expected_share_of_label_2, abs=0.02)
    unweighted = SamplingConfig(negatives=7, weighted=False)
    drawn = np.concatenate([sample_groups(labels, [np.arange(10)], unweighted,
                                          np.random.default_rng(s))[0, 1:] for s in range(600)])
    assert np.mean(drawn == 1) == pytest.approx(1 / 9, abs=0.02)      # as above: 2.6 errors


def test_pairs_take_any_lower_label():
    config = SamplingConfig.from_config({"scheme": "pairs", "negatives": 7, "min_label_gap": 2,
                                         "weighted": True})
    assert (config.negatives, config.min_label_gap, config.weighted) == (1, 1, False)
    groups = sample_groups(LABELS, ROWS, config, np.random.default_rng(0))
    assert groups.shape[1] == 2
    assert (LABELS[groups[:, 1]] < LABELS[groups[:, 0]]).all()
    assert {6, 7} <= set(groups[:, 0].tolist())      # label-2 reviews over the label-1 one


def test_batches_are_deterministic_per_epoch_and_resumable():
    config = SamplingConfig(negatives=1, min_label_gap=1, weighted=False)
    sampler = GroupBatchSampler(LABELS, ROWS, config, batch_size=4, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    again = GroupBatchSampler(LABELS, ROWS, config, batch_size=4, seed=3)
    again.set_epoch(0)
    assert list(again) == first
    assert all(len(b) == 4 for b in first[:-1])           # 2 pairs per batch
    sampler.set_epoch(1)
    assert list(sampler) != first
    again.set_epoch(0)
    again.skip(2)
    assert list(again) == first[2:]
    assert len(again) == len(first) - 2


def test_ranks_get_disjoint_equal_shares():
    config = SamplingConfig(negatives=1, min_label_gap=1, weighted=False)
    whole = GroupBatchSampler(LABELS, ROWS, config, batch_size=2, seed=0)
    shares = [GroupBatchSampler(LABELS, ROWS, config, batch_size=2, seed=0, rank=r, world_size=2)
              for r in range(2)]
    a, b = (list(s) for s in shares)
    assert len(a) == len(b) == len(list(whole)) // 2
    assert a + b != [] and not set(map(tuple, a)) & set(map(tuple, b))


def test_evaluation_batches_cover_every_review_once():
    rows = [np.arange(0, 5), np.arange(5, 7), np.arange(7, 20)]
    batches = evaluation_batches(rows, batch_rows=6)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(20)) and max(map(len, batches)) <= 6
    split = [evaluation_batches(rows, 6, rank=r, world_size=2) for r in range(2)]
    assert sorted(i for part in split for b in part for i in b) == list(range(20))


def test_hinge_losses_by_hand():
    # one group: positive (label 3, score 1.0), negatives (label 1, score 0.5), (label 0, 2.0)
    scores = torch.tensor([1.0, 0.5, 2.0])
    labels = torch.tensor([3.0, 1.0, 0.0])
    # label gap: max(0, 2 - 0.5) + max(0, 3 - (-1.0)) = 1.5 + 4
    # every value here is a small binary fraction, so float32 computes them exactly
    assert group_hinge_loss(scores, labels, 3, "label-gap").item() == 5.5
    # margin 1: max(0, 1 - 0.5) + max(0, 1 + 1) = 0.5 + 2
    assert group_hinge_loss(scores, labels, 3, 1.0).item() == 2.5
    # two pairs averaged: (max(0, 1 - 2) + max(0, 1 - 0)) / 2
    pairs = group_hinge_loss(torch.tensor([3.0, 1.0, 0.0, 0.0]), torch.ones(4), 2, 1.0)
    assert pairs.item() == 0.5
