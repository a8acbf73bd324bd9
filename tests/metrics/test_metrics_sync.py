"""The shared machinery: stable ids, first-occurrence de-duplication, typed states, torchmetrics API."""

from __future__ import annotations

import pytest
import torch

from lightning_gpv.metrics import CIDErD, MaskIoU, VQAAccuracy
from lightning_gpv.metrics._sync import encode_ids, first_occurrence, stable_hash


def test_stable_hash_is_fixed_across_processes_and_runs() -> None:
    # Python's hash() is salted per process; ids must hash identically on every DDP rank.
    assert stable_hash("abc") == 6455300059550759896
    assert stable_hash("COCO_val2014_000000000042") == -3428200816886547024
    assert stable_hash("") == -5426141060434712860


def test_encode_ids_and_first_occurrence() -> None:
    ids, has_id = encode_ids(["a", 7, "a", 7, "b"], 5)
    keep = first_occurrence(ids, has_id)
    assert keep.tolist() == [True, True, False, False, True]
    no_ids, flags = encode_ids(None, 3)
    assert first_occurrence(no_ids, flags).tolist() == [
        True,
        True,
        True,
    ]  # rows without ids are never dropped
    mixed_ids = torch.cat([ids, no_ids])
    mixed_flags = torch.cat([has_id, flags])
    assert first_occurrence(mixed_ids, mixed_flags).tolist() == [
        True,
        True,
        False,
        False,
        True,
        True,
        True,
        True,
    ]
    with pytest.raises(ValueError):
        encode_ids([1, 2], 3)
    tensor_ids, _ = encode_ids(torch.tensor([[1, 2]]), 2)
    assert tensor_ids.tolist() == [1, 2]


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_forward_reset_and_dtype_handling() -> None:
    metric = VQAAccuracy()
    batch_value = metric(["yes"], [["yes"] * 10])  # forward: update + value of this batch
    assert batch_value.item() == 1.0
    metric.update(["no"], [["yes"] * 10])
    assert metric.compute().item() == 0.5
    metric.reset()
    assert metric.compute().item() == 0.0
    cider = CIDErD(tokenizer=None).to(torch.device("cpu"))
    cider.update(["a b"], [["a b", "b c"]], ids=["x"])
    cider.set_dtype(torch.float16)  # states keep their declared dtypes (int64 hashes, ids)
    assert cider.words[0].dtype == torch.int64 and cider.sample_ids[0].dtype == torch.int64
    assert cider.compute().dtype == torch.float64


def test_states_are_tensors_only() -> None:
    metric = MaskIoU()
    metric.update([torch.ones(2, 2, dtype=torch.bool)], [torch.ones(2, 2, dtype=torch.bool)], ids=["s1"])
    for name in metric._defaults:
        value = getattr(metric, name)
        assert isinstance(value, list) and all(isinstance(v, torch.Tensor) for v in value), name
