"""``lightning_gpv.demo_processes``: jobs in spawned processes, their results by name, a failure named."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_gpv.demo_processes import run_parallel


@pytest.mark.slow
def test_results_come_back_by_name_and_a_failed_child_names_its_log(tmp_path: Path) -> None:
    # A spawned child imports its runner by name, so builtins stand in for the demo's runners; each is
    # called as ``runner(*args, bars=False)``.
    assert run_parallel({"one": (dict, ()), "two": (dict, ())}, tmp_path) == {
        "one": {"bars": False},
        "two": {"bars": False},
    }
    assert (tmp_path / "one.log").is_file() and (tmp_path / "two.log").is_file()
    with pytest.raises(RuntimeError, match=r"demo: bad failed: TypeError.*see .*bad\.log"):
        run_parallel({"fine": (dict, ()), "bad": (int, ("x",))}, tmp_path)  # int() takes no ``bars``
    assert "TypeError" in (tmp_path / "bad.log").read_text()
