"""Batches of any structure reach the device whole and are counted by their first tensor."""

from __future__ import annotations

from collections import namedtuple

import torch

from launcher.training.batches import batch_size, first_tensor, to_device

Pair = namedtuple("Pair", ["inputs", "targets"])


def test_nested_batches_keep_their_structure_and_every_tensor_moves() -> None:
    batch = {
        "tokens": torch.arange(12).reshape(3, 4),
        "extra": [torch.zeros(3), (torch.ones(3, 2), "a label")],
        "pair": Pair(torch.ones(3, 1), torch.tensor([0, 1, 2])),
        "count": 7,
    }
    moved = to_device(batch, torch.device("meta"))
    assert moved.keys() == batch.keys()
    assert moved["tokens"].device.type == "meta" and moved["tokens"].shape == (3, 4)
    assert isinstance(moved["extra"], list) and isinstance(moved["extra"][1], tuple)
    assert moved["extra"][1][0].device.type == "meta" and moved["extra"][1][1] == "a label"
    assert isinstance(moved["pair"], Pair) and moved["pair"].targets.device.type == "meta"
    assert moved["count"] == 7


def test_channels_last_applies_to_image_tensors_only() -> None:
    images, masks = torch.rand(2, 3, 4, 5), torch.zeros(2, 3, 4, 5, dtype=torch.long)
    moved = to_device((images, masks), torch.device("cpu"), channels_last=True)
    assert moved[0].is_contiguous(memory_format=torch.channels_last)
    assert not moved[1].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(moved[0], images)


def test_a_batch_is_counted_by_its_first_tensor() -> None:
    assert batch_size((torch.zeros(5, 2), torch.zeros(5))) == 5
    assert batch_size({"text": ["a", "b"], "ids": torch.zeros(3, 8)}) == 3
    assert batch_size([]) == 0
    assert first_tensor({"a": [1, {"b": torch.ones(2)}]}) is not None
