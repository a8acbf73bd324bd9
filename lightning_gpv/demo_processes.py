"""The demo's models side by side, one process each: the children's progress reported to the parent, which
draws one progress bar per model, and no child left running however the demo ends.

:func:`run_parallel` starts each ``runner(*args, bars=False)`` of its jobs in a spawned process whose output
goes to ``OUT/<name>.log``; inside it, :class:`StepReporter` (a fit callback) and :func:`report_phase` send
``(name, phase, step, total)`` to the parent.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

Job = tuple[Callable[..., Any], tuple[Any, ...]]
"""A runner and its positional arguments; the child calls ``runner(*args, bars=False)``."""

# Set in a child process: where the reports go, and the name of the model it runs.
_REPORT: Any = None
_MODEL = ""


class StepReporter(Callback):
    """Sends the training step of a demo child process to the parent, which draws the progress bars."""

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if _REPORT is not None:
            _REPORT.put((_MODEL, "fit", trainer.global_step, trainer.estimated_stepping_batches))


def report_phase(phase: str) -> None:
    """Show ``phase`` (``"test"``, ``"pictures"``) beside this child's progress bar (nothing in-process)."""
    if _REPORT is not None:
        _REPORT.put((_MODEL, phase, 0, 0))


def _child(name: str, job: Job, out: Path) -> Any:
    """One model's part in a child process; everything it prints goes to ``OUT/<name>.log``."""
    global _MODEL
    _MODEL = name
    log = open(out / f"{name}.log", "w", buffering=1, encoding="utf-8")  # noqa: SIM115 (lives with the process)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log.fileno(), 1)  # also what C extensions and warnings write
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    runner, args = job
    return runner(*args, bars=False)


def _child_main(name: str, job: Job, out: Path, report: Any, results: Any) -> None:
    """A demo child process: ``_child(name, job, out)``, its result (or its error) put on ``results``."""
    global _REPORT
    _REPORT = report
    try:
        result = _child(name, job, out)
    except BaseException as err:
        results.put((name, None, repr(err)))
        raise
    results.put((name, result, None))


def _stop(processes: Sequence[Any], grace: float = 20.0) -> None:
    """Stop the children still running: SIGTERM (Lightning ends the fit at the next step), SIGKILL after
    ``grace`` seconds."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def run_parallel(jobs: dict[str, Job], out: Path) -> dict[str, Any]:
    """Run the ``jobs`` (name -> (runner, args)) at the same time, one spawned process each, and return
    their results by name.

    Each child's output goes to ``OUT/<name>.log``; here one progress bar per job shows its training steps.
    A failed child raises ``RuntimeError`` naming it and its log. However this function ends (a child's
    error, Ctrl-C, the SIGTERM that the demo turns into ``SystemExit``), no child outlives it.
    """
    import multiprocessing as mp

    from tqdm.auto import tqdm

    ctx = mp.get_context("spawn")  # no fork of a process holding torch threads
    print(
        f"demo: fitting {', '.join(jobs)} in parallel; logs in "
        + ", ".join(str(out / f"{n}.log") for n in jobs)
    )
    with ctx.Manager() as manager:
        report, results = manager.Queue(), manager.Queue()
        processes = {
            name: ctx.Process(target=_child_main, args=(name, job, out, report, results), name=f"demo-{name}")
            for name, job in jobs.items()
        }
        outcomes: dict[str, tuple[Any, str | None]] = {}
        try:
            for process in processes.values():
                process.start()
            bars = {
                name: tqdm(desc=name, position=k, unit="step", dynamic_ncols=True)
                for k, name in enumerate(processes)
            }
            while len(outcomes) < len(processes):
                _collect(results, outcomes)
                for name, process in processes.items():
                    if name not in outcomes and not process.is_alive():
                        _collect(results, outcomes)  # its result may have arrived as it exited
                        outcomes.setdefault(name, (None, f"exit code {process.exitcode}"))
                try:
                    name, phase, step, total = report.get(timeout=0.5)
                except queue.Empty:
                    continue
                bar = bars[name]
                if phase == "fit":
                    bar.total, bar.n = total, step
                    bar.refresh()
                else:
                    bar.set_postfix_str(phase)
            for bar in bars.values():
                bar.close()
        finally:
            _stop(list(processes.values()))
    for name, (_, error) in outcomes.items():
        if error is not None:
            raise RuntimeError(f"demo: {name} failed: {error}; see {out / f'{name}.log'}")
    return {name: result for name, (result, _) in outcomes.items()}


def _collect(results: Any, outcomes: dict[str, tuple[Any, str | None]]) -> None:
    """Move every ``(name, result, error)`` waiting on ``results`` into ``outcomes``."""
    while True:
        try:
            name, result, error = results.get_nowait()
        except queue.Empty:
            return
        outcomes[name] = (result, error)
