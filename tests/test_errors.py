"""Bad input keeps its error class across data-loader worker processes (so the CLI reports it in one line)."""

from __future__ import annotations

import pytest
from torch.utils.data import DataLoader, Dataset

from datamodules.errors import DataFormatError
from lightning_gpv.errors import InputError


class _BadRecord(Dataset[int]):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        raise DataFormatError("/data/ann.json", f"annotations[{index}].bbox", "expected 4 numbers")


def test_data_format_errors_are_input_errors_with_path_and_field() -> None:
    err = DataFormatError("/data/ann.json", "annotations[3].bbox", "expected 4 numbers")
    assert isinstance(err, InputError) and isinstance(err, ValueError)
    assert str(err) == "/data/ann.json: field 'annotations[3].bbox': expected 4 numbers"
    assert (err.path, err.field, err.reason) == (
        "/data/ann.json",
        "annotations[3].bbox",
        "expected 4 numbers",
    )


@pytest.mark.parametrize("workers", [0, 1])
def test_a_worker_error_keeps_its_class_and_names_the_file(workers: int) -> None:
    loader = DataLoader(
        _BadRecord(), num_workers=workers, multiprocessing_context="spawn" if workers else None
    )
    with pytest.raises(DataFormatError) as info:
        next(iter(loader))
    assert str(info.value).endswith("/data/ann.json: field 'annotations[0].bbox': expected 4 numbers")
    if workers:
        assert "DataLoader worker" in (info.value.worker_report or "")
