"""Stage helpers: the poly schedule (restarted per stage, ramped, or decayed once) and the data loader of another batch size."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from jcas_monai.engines import StagePolyLR
from jcas_monai.engines.stages import with_batch_size


def test_stage_poly_lr_restarts_at_the_stage_boundary():
    factor = StagePolyLR(warmup_epochs=4, max_epochs=6, power=1.0)
    assert [factor(e) for e in range(6)] == [1.0, 0.75, 0.5, 0.25, 1.0, 0.5]


def test_stage_poly_lr_ramps_at_each_restart_or_decays_once():
    ramped = StagePolyLR(warmup_epochs=4, max_epochs=8, power=1.0, ramp_epochs=1)
    assert [ramped(e) for e in range(8)] == pytest.approx([0.5, 0.75, 0.5, 0.25, 0.5, 0.75, 0.5, 0.25])
    once = StagePolyLR(warmup_epochs=4, max_epochs=8, power=1.0, ramp_epochs=1, restart=False)
    assert [once(e) for e in range(8)] == pytest.approx([0.5, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    with pytest.raises(ValueError, match="ramp_epochs"):
        StagePolyLR(4, 8, ramp_epochs=-1)


def _collate(items):
    return torch.stack([x for (x,) in items])


def test_with_batch_size_keeps_dataset_sampler_and_loading_settings():
    dataset = TensorDataset(torch.arange(10.0))
    sampler = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=3)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, collate_fn=_collate, drop_last=True)
    smaller = with_batch_size(loader, 2)

    assert smaller.batch_size == 2 and smaller.dataset is dataset and smaller.sampler is sampler
    assert smaller.collate_fn is _collate and smaller.drop_last and len(smaller) == 2 and len(loader) == 1
    sampler.set_epoch(5)  # the epoch set on the shared sampler drives both loaders' order
    indices = list(sampler)
    assert torch.cat(list(smaller)).tolist() == [float(i) for i in indices[:4]]


def test_with_batch_size_refuses_a_custom_batch_sampler():
    dataset = TensorDataset(torch.arange(4.0))
    loader = DataLoader(dataset, batch_sampler=BatchSampler(SequentialSampler(dataset), 2, drop_last=False))
    with pytest.raises(ValueError, match="batch_sampler"):
        with_batch_size(loader, 1)
