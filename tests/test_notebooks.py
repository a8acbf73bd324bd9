"""Every notebook in ``notebooks/`` is committed without outputs and runs top to bottom with tiny settings.

Execution (marked ``slow``): ``nbclient`` runs each notebook in a temporary working directory, in a kernel
started from the interpreter running pytest (``sys.executable -m ipykernel_launcher``, through a kernel spec
written to a temporary folder, whatever kernel specs the machine has; an injected first cell checks
``sys.prefix``). The cell tagged ``parameters`` must set ``QUICK``; a cell setting ``QUICK = True`` is
injected right after it, as papermill does.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
TINY_PARAMETERS = "QUICK = True  # injected by tests/test_notebooks.py\n"
TIMEOUT_S = 300  # per cell


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_notebooks_exist() -> None:
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_outputs_stripped(path: Path) -> None:
    """Committed notebooks carry no outputs, execution counts or widget state (nbstripout's result)."""
    nb = _load(path)
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        assert cell.get("outputs") == [], f"{path.name} cell {index} has outputs"
        assert cell.get("execution_count") is None, f"{path.name} cell {index} has an execution count"
        assert "execution" not in cell.get("metadata", {}), f"{path.name} cell {index} has timing metadata"
    assert "widgets" not in nb.get("metadata", {}), f"{path.name} stores widget state"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_has_parameters_cell(path: Path) -> None:
    """One code cell is tagged ``parameters`` and defines ``QUICK``, which the execution test sets."""
    cells = [c for c in _load(path)["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one cell tagged 'parameters', found {len(cells)}"
    assert cells[0]["cell_type"] == "code"
    source = "".join(cells[0]["source"])
    assert any(line.startswith("QUICK =") for line in source.splitlines()), f"{path.name}: no QUICK ="


def _inject_parameters(nb: Any) -> None:
    import nbformat

    cells = nb.cells
    index = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell(TINY_PARAMETERS)
    injected.metadata["tags"] = ["injected-parameters"]
    cells.insert(index + 1, injected)
    # The kernel must be the interpreter running the tests (checked by the notebook's first cell).
    check = nbformat.v4.new_code_cell(
        f"import sys\nassert sys.prefix == {sys.prefix!r}, (sys.prefix, sys.executable)\n"
    )
    cells.insert(0, check)


@pytest.fixture(scope="module")
def kernel_spec_manager(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A kernel spec manager whose only ``python3`` kernel is this interpreter.

    The machine's ``python3`` spec (user or system Jupyter folders) may point at another Python;
    jupyter_client only swaps a bare ``python`` for ``sys.executable``, so the spec here has the full path.
    """
    pytest.importorskip("ipykernel")
    kernelspec = pytest.importorskip("jupyter_client.kernelspec")
    kernels = tmp_path_factory.mktemp("kernels")
    (kernels / "python3").mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (lightning-gpv tests)",
        "language": "python",
    }
    (kernels / "python3" / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return kernelspec.KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path: Path, tmp_path: Path, kernel_spec_manager: Any) -> None:
    """Run every cell with the tiny parameters; any cell error fails the test with the cell's traceback."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    from jupyter_client.manager import KernelManager

    nb = nbformat.read(path, as_version=4)
    _inject_parameters(nb)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=kernel_spec_manager)
    client = nbclient.NotebookClient(
        nb,
        km=km,
        kernel_name="python3",
        timeout=TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},
        allow_errors=False,
    )
    start = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:  # pragma: no cover - the failure message
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # drop the traceback's terminal colours
        pytest.fail(f"{path.name} failed:\n{message}", pytrace=False)
    elapsed = time.perf_counter() - start
    errors = [
        output
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: {errors}"
    print(f"{path.name}: {elapsed:.1f} s")
