"""Fixtures shared across the test folders."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test on one torch thread: the machine's two cores are shared, and one thread is several
    times faster than two there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """Import a script of ``benchmarks/`` by its name (``load_benchmark("coseg_probe")``), once per test
    session: the scripts are files run by path, not a package."""
    loaded: dict[str, ModuleType] = {}

    def load(name: str) -> ModuleType:
        if name not in loaded:
            path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None, path
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses look their module up there
            spec.loader.exec_module(module)
            loaded[name] = module
        return loaded[name]

    return load


@pytest.fixture(scope="session")
def shapes_and_vocab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """ShapesWorld (20 images, seed 0) and GPV-1's tiny vocabularies, built once per test session."""
    from lightning_gpv.build_vocab import build
    from lightning_gpv.shapesworld import make_shapes

    work = tmp_path_factory.mktemp("shapes_and_vocab")
    data = make_shapes(work / "data", num_images=20, seed=0, progress=False)
    build(work / "vocab", coco_root=str(data / "coco"), vqa_root=str(data / "vqav2"), tiny=True)
    return Path(data), work / "vocab"


@pytest.fixture
def run_ranks() -> Callable[..., list[str]]:
    """Run a worker script as ``world`` processes (``script RANK WORLD INIT_FILE *args``), wait for all, and
    return their outputs; fails when a process fails or does not print ``rank N ok``."""

    def run(script: Path, world: int, init: Path, *args: str, timeout: float = 240) -> list[str]:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
        cwd = Path(__file__).resolve().parents[1]
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(rank), str(world), str(init), *args],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
            for rank in range(world)
        ]
        outputs = []
        for proc in procs:
            try:
                outputs.append(proc.communicate(timeout=timeout)[0])
            except subprocess.TimeoutExpired:
                for other in procs:
                    other.kill()
                raise
        for rank, (proc, out) in enumerate(zip(procs, outputs)):
            assert proc.returncode == 0 and f"rank {rank} ok" in out, out[-4000:]
        return outputs

    return run
