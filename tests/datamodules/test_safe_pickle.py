"""The restricted unpickler: plain data loads, anything that names a global is refused before it runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from datamodules.errors import DataFormatError
from datamodules.refcoco import RefCocoDataModule
from datamodules.safe_pickle import UnsafePickleError, safe_load_pickle


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_plain_data_loads(tmp_path: Path) -> None:
    data = [{"ref_id": 1, "sentences": [{"sent": "a", "tokens": ["a"]}], "score": 0.5, "ok": True, "x": None}]
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        path = tmp_path / f"p{protocol}.p"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        assert safe_load_pickle(path) == data


def test_python2_str_bytes_decode(tmp_path: Path) -> None:
    # protocol-2 SHORT_BINSTRING ('U') is how Python 2 pickles ``str``: b"\x80\x02]q\x00U\x03abcq\x01a."
    path = tmp_path / "py2.p"
    path.write_bytes(b"\x80\x02]q\x00U\x03abcq\x01a.")
    assert safe_load_pickle(path) == ["abc"]


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 1, "evil": _Exploit(marker)}], protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\)\.p.*refusing to unpickle global posix\.system"):
        safe_load_pickle(path)
    assert not marker.exists()


def test_any_global_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "set.p"
    path.write_bytes(pickle.dumps({1, 2}, protocol=2))  # protocol 2 builds sets through builtins.set
    with pytest.raises(UnsafePickleError, match=r"global __builtin__\.set"):
        safe_load_pickle(path)


def test_truncated_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "t.p"
    path.write_bytes(pickle.dumps([{"a": 1}] * 10, protocol=2)[:-7])
    with pytest.raises(DataFormatError, match=r"t\.p: not a readable pickle"):
        safe_load_pickle(path)
    with pytest.raises(DataFormatError, match="file not found"):
        safe_load_pickle(tmp_path / "nope.p")


def test_refcoco_datamodule_refuses_malicious_refs(refcoco_root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    refs = refcoco_root / "refcoco" / "refs(unc).p"
    refs.write_bytes(pickle.dumps([_Exploit(marker)], protocol=2))
    dm = RefCocoDataModule(str(refcoco_root), on_bad_sample="skip")
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\)\.p"):
        dm.setup("fit")
    assert not marker.exists()
