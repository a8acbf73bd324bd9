"""The ``lightning-gpv`` command.

* ``lightning-gpv make-shapes --root DIR --num-images N --seed S``: write the ShapesWorld data set.
* ``lightning-gpv build-vocab --coco-root R/coco --vqa-root R/vqav2 --out DIR --tiny``: GPV-1's answer
  vocabulary folder (``DIR/answers``, a recipe's ``model.vocab_path``); see :mod:`lightning_gpv.build_vocab`.
* ``lightning-gpv convert gpv1|detr --checkpoint FILE --out DIR``: published GPV-1 or DETR weights in
  GPV1's parameter names; see :mod:`lightning_gpv.models.gpv1.convert`.
* ``lightning-gpv export --ckpt_path CKPT --out DIR [--merge-lora | --adapter]``: a checkpoint of either
  family as a self-contained model folder (``save_pretrained``), or a VistaLLM LoRA adapter folder; see
  :mod:`lightning_gpv.export`.
* ``lightning-gpv plan --preset 7b --mode stage1 --gpus 8 --gpu-memory 80`` (or ``-c RECIPE.yaml``,
  ``--table``): the memory per GPU of a VistaLLM run, from the model built on the meta device; see
  :mod:`lightning_gpv.plan`.
* ``lightning-gpv fit|validate|test|predict -c RECIPE.yaml``: the Lightning CLI, with the model and the
  data module chosen by ``class_path`` and the model's processor handed to the data module.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_gpv.errors import InputError
from lightning_gpv.models.hub import absolute_if_local, saved_model_folder, torch_file_problem
from lightning_gpv.models.shipped import state_mismatch


class GPVLightningCLI(LightningCLI):
    """LightningCLI that hands the model's processor to the data module.

    Every system exposes ``processor`` (a :class:`~lightning_gpv.tasks.processing.SampleProcessor`) and
    every data module accepts one through ``connect``; it is handed over once both are instantiated (a
    jsonargparse ``link_arguments`` cannot be used: the processor is a ``typing.Protocol``, which
    jsonargparse rejects as a value).
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--init_weights",
            type=str | None,
            default=None,
            help="Checkpoint whose model weights start this run (a new run: no optimizer, scheduler or step "
            "state, unlike --ckpt_path). Used by fine-tuning and second-stage recipes.",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse as Lightning does, with dotted overrides below a model's ``config`` mapping merged into it.

        jsonargparse treats ``config`` (a ``dict``) as one value:
        ``--model.init_args.config.llm.num_layers=2`` would replace the recipe's whole ``llm`` mapping by
        ``{"num_layers": "2"}``, a string, and ``--model.init_args.config.num_bins=32`` a bare preset name
        by a mapping without it. Such overrides (keys below ``config``) are taken out of the command line,
        set into the mapping the rest of it gives (a preset name becomes ``{"preset": name}``; each value is
        read as YAML: ``2`` an int, ``true`` a bool, ``[64, 64]`` a list), and the merged mapping is passed
        as ``--model.init_args.config`` last, so ``--print_config`` and the saved ``config.yaml`` show it.
        ``sys.argv`` is left as it is: other DDP ranks parse the same command line the same way.
        """
        if isinstance(args, (dict, Namespace)):  # an already structured config: nothing dotted to merge
            super().parse_arguments(parser, args)
            return
        rest, nested = split_config_overrides(list(sys.argv[1:] if args is None else args))
        if not nested:
            super().parse_arguments(parser, args)
            return
        given = parser.parse_args([arg for arg in rest if not arg.startswith("--print_config")])
        subcommand = given.get("subcommand")
        section = given[subcommand] if subcommand else given
        model = section.get("model")
        init_args = model.get("init_args") if model is not None and hasattr(model, "get") else None
        if init_args is None or "config" not in init_args:
            names = ", ".join(option for option, _, _ in nested)
            parser.error(f"{names}: the model of this command has no config mapping to set it in")
        merged = merge_config_overrides(init_args.get("config"), nested)
        self.config = parser.parse_args([*rest, f"--model.init_args.config={json.dumps(merged)}"])

    def _parse_ckpt_path(self) -> None:
        """``--ckpt_path`` with a recipe's model (Lightning would silently replace its arguments by the
        checkpoint's): a checkpoint of another model class is refused, naming both; ``fit`` (a resume, which
        also restores the optimizer and schedule) refuses model arguments that differ from the checkpoint's,
        naming them; ``validate``/``test``/``predict`` keep the arguments given (the checkpoint gives the
        weights). Without a model in the config the checkpoint's model is rebuilt, as Lightning does."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if ckpt_path == "last":
            ckpt_path = self._last_checkpoint(subcommand)
            self.config[subcommand].ckpt_path = ckpt_path
        elif _local_path(ckpt_path) and not Path(ckpt_path).is_file():
            what = "a folder, not a checkpoint file" if Path(ckpt_path).is_dir() else "no such checkpoint"
            self.parser.error(
                f"--ckpt_path {ckpt_path}: {what} (give a .ckpt file, or 'last'; a recipe that resumes an "
                "earlier stage names that stage's checkpoint: fit the earlier recipe first)"
            )
        model = self.config[subcommand].get("model")
        given = getattr(model, "class_path", None) if model is not None else None
        if not (ckpt_path and Path(ckpt_path).is_file()) or given is None:
            super()._parse_ckpt_path()
            return
        try:
            saved, hparams = checkpoint_class_path(Path(ckpt_path))
        except ValueError as err:
            self.parser.error(str(err))
        if saved is not None and saved != given:
            self.parser.error(
                f"--ckpt_path {ckpt_path} holds a checkpoint of {saved}, but the recipe's model is {given}; "
                "use it with a recipe of its own model class"
            )
        if subcommand == "fit":
            args = self.config[subcommand].model.get("init_args") or {}
            # The config is stored resolved (a checkpoint may not match a preset name textually); a
            # different architecture fails when the weights load.
            differ = sorted(
                key for key, value in dict(args).items()
                if key != "config" and key in hparams and not _same_argument(value, hparams[key])
            )  # fmt: skip
            if differ:
                listing = ", ".join(
                    f"{k}={_plain(args[k])!r} (checkpoint: {_plain(hparams[k])!r})" for k in differ
                )
                self.parser.error(
                    f"--ckpt_path {ckpt_path}: a resume keeps the checkpoint's model arguments, not: "
                    f"{listing}; drop them, or start a new run from the weights with --init_weights"
                )

    def _last_checkpoint(self, subcommand: str) -> str:
        """``--ckpt_path last`` as a path: the newest ``last*.ckpt`` the run's checkpoint callbacks wrote in
        an earlier process. Lightning itself looks only in this run's new ``version_N`` folder, finds nothing
        and starts from step 0 with a warning; here a missing one is an error naming where it was sought."""
        trainer = self.config[subcommand].get("trainer") or {}
        root = Path(trainer.get("default_root_dir") or Path.cwd())
        folders = [root / "checkpoints", *root.glob("*/version_*/checkpoints"), *root.glob("*/checkpoints")]
        for callback in trainer.get("callbacks") or []:
            init_args = callback.get("init_args") if hasattr(callback, "get") else None
            dirpath = init_args.get("dirpath") if init_args is not None else None
            if dirpath:
                folders.append(Path(dirpath))
        found = [path for folder in folders for path in folder.glob("last*.ckpt")]
        if not found:
            self.parser.error(
                f"--ckpt_path last: no last.ckpt under {root} (checkpoints/, */version_*/checkpoints/) or a "
                "checkpoint callback's dirpath; give the checkpoint's path, or fit without --ckpt_path"
            )
        newest = max(found, key=lambda path: path.stat().st_mtime)
        print(f"--ckpt_path last: {newest}", file=sys.stderr)
        return str(newest)

    def before_instantiate_classes(self) -> None:
        """Warn about ``validate`` with no validation batches: the tiny recipes fit without validating
        (``limit_val_batches: 0``), and Lightning would end such a command at once without a word."""
        if self.subcommand != "validate":
            return
        trainer = self.config["validate"].get("trainer") or {}
        if trainer.get("limit_val_batches") == 0:
            rank_zero_warn(
                "validate: the recipe sets trainer.limit_val_batches to 0 (its fit does not validate), so "
                "nothing is validated; add --trainer.limit_val_batches=1.0 (every batch) or =N, or run test"
            )

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:
            # jsonargparse reports a class that failed to build as "Does not validate against any of the
            # Union subtypes", after two tracebacks; a missing or bad file named by the recipe is the
            # user's input: report it as such (``main`` prints one line).
            cause = _input_cause(err)
            if cause is None:
                raise
            raise InputError(str(cause)) from err
        init_weights = self._get(self.config, "init_weights") if self.subcommand else None
        ckpt_path = self._get(self.config, "ckpt_path") if self.subcommand else None
        if init_weights and ckpt_path:
            # The checkpoint's weights replace the model's before it runs: a stage-2 recipe evaluated (or a
            # run resumed) from its own checkpoint needs no stage-1 file, e.g. on another machine.
            rank_zero_info(
                f"--init_weights {init_weights}: not loaded, --ckpt_path {ckpt_path} holds the weights"
            )
        elif init_weights:
            _load_init_weights(self.model, init_weights)
        if self.subcommand == "predict":
            saved = saved_model_folder(self._get(self.config, "model.init_args.config"), None)
            _warn_predict(self.trainer.callbacks, ckpt_path or init_weights or saved)
        processor = getattr(self.model, "processor", None)
        connect = getattr(self.datamodule, "connect", None)
        if processor is not None and connect is not None:
            connect(processor)


_CONFIG_PREFIXES = ("--model.init_args.config.", "--model.config.")


def split_config_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, list[str], str]]]:
    """Separate the dotted overrides of keys below a model's ``config`` from the other arguments.

    Returns:
        The other arguments in order, and ``(option, keys, value)`` per override, e.g.
        ``("--model.init_args.config.llm.num_layers", ["llm", "num_layers"], "2")``; the value is the text
        after ``=`` or the next argument.
    """
    rest: list[str] = []
    nested: list[tuple[str, list[str], str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        option, has_value, value = arg.partition("=")
        prefix = next((p for p in _CONFIG_PREFIXES if option.startswith(p)), None)
        keys = option[len(prefix) :].split(".") if prefix else []
        if not keys or not all(keys):
            rest.append(arg)
            i += 1
            continue
        if not has_value:
            if i + 1 >= len(argv):
                raise InputError(f"{option}: expected a value")
            value = argv[i + 1]
            i += 1
        nested.append((option, keys, value))
        i += 1
    return rest, nested


def merge_config_overrides(config: Any, overrides: Sequence[tuple[str, list[str], str]]) -> dict[str, Any]:
    """``config`` (a preset name, a mapping or ``None``) as a mapping with each override set in it.

    Raises:
        InputError: An override goes below a key that holds a value, not a mapping (naming the option).
    """
    if config is None:
        merged: dict[str, Any] = {}
    elif isinstance(config, str):
        merged = {"preset": config}
    else:
        merged = _plain(config)  # new dicts and lists all the way down: the parsed config stays as it is
    for option, keys, text in overrides:
        node = merged
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                held = ".".join(keys[: depth + 1])
                raise InputError(
                    f"{option}: config.{held} is {child!r}, not a mapping to set {keys[-1]!r} in"
                )
            node = child
        try:
            node[keys[-1]] = yaml.safe_load(text)
        except yaml.YAMLError:
            node[keys[-1]] = text
    return merged


def _local_path(ckpt_path: str | None) -> bool:
    """Whether ``--ckpt_path`` names a local file: not empty, not one of the Trainer's keywords (``best``,
    ``hpc``, ``registry:NAME``), not a URL that fsspec opens (``s3://``, ``hf://``)."""
    if not ckpt_path or ckpt_path in ("best", "last", "hpc") or "://" in ckpt_path:
        return False
    return not ckpt_path.lower().startswith("registry")


def _warn_predict(callbacks: Sequence[Any], weights: str | Path | None) -> None:
    """Warn about a ``predict`` that writes nothing (no prediction writer among the trainer's callbacks) or
    answers with the weights the recipe builds (``weights``: no ``--ckpt_path``, ``--init_weights`` or saved
    model folder): both run to the end without a word otherwise."""
    if not any(isinstance(callback, BasePredictionWriter) for callback in callbacks):
        rank_zero_warn(
            "predict: no prediction writer among the trainer's callbacks, so nothing is written; add "
            "--trainer.callbacks+=lightning_gpv.prediction_writer.PredictionWriter "
            "--trainer.callbacks.output_dir DIR"
        )
    if not weights:
        rank_zero_warn(
            "predict: no --ckpt_path or --init_weights, so the model answers with the weights its recipe "
            "builds (untrained apart from any pretrained parts); give the checkpoint of a fit, or a saved "
            "model folder as --model.init_args.config"
        )


def _init_weights_state(path: str) -> dict[str, torch.Tensor]:
    """The model weights of ``--init_weights`` (read with ``weights_only=True``).

    Raises:
        InputError: The file is missing (a later stage's recipe names the earlier stage's ``last.ckpt``),
            unreadable, or holds no ``state_dict``.
    """
    if not Path(path).is_file():
        raise InputError(f"--init_weights {path}: no such checkpoint (a later stage starts from the earlier "
                         "stage's last.ckpt: fit that recipe first, or pass another checkpoint)")  # fmt: skip
    checkpoint = read_checkpoint(path, "--init_weights")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise InputError(f"--init_weights {path}: no state_dict; not a Lightning checkpoint")
    return checkpoint["state_dict"]


def _load_init_weights(model: torch.nn.Module, path: str) -> None:
    """Load ``--init_weights`` into the model the recipe built, strictly.

    Raises:
        InputError: The checkpoint's weights do not fit the model (another architecture: a different
            preset, depth or vocabulary), naming the first missing, unexpected and reshaped keys.
    """
    state = _init_weights_state(path)
    if differences := state_mismatch(model.state_dict(), state):
        raise InputError(
            f"--init_weights {path}: its weights do not fit the model this recipe builds ({differences}); "
            "give the checkpoint of a run with the same model config"
        )
    model.load_state_dict(state)
    newer = _newer_checkpoints(Path(path))
    rank_zero_info(f"--init_weights: the model weights of {path}")
    if newer:
        rank_zero_warn(
            f"--init_weights {path}: a newer checkpoint of a later run lies beside it ({newer[0]}); a rerun "
            "of the earlier stage writes last-v1.ckpt or a new version_N folder: pass that checkpoint if "
            "it is the one to start from"
        )


def _newer_checkpoints(path: Path) -> list[Path]:
    """``last*.ckpt`` files newer than ``path`` beside it or in a sibling ``version_N/checkpoints`` folder,
    newest first: what a rerun of the run that wrote ``path`` leaves."""
    candidates = set(path.parent.glob("last*.ckpt"))
    if path.parent.name == "checkpoints" and path.parent.parent.name.startswith("version_"):
        candidates |= set(path.parent.parent.parent.glob("version_*/checkpoints/last*.ckpt"))
    mtimes = {p: p.stat().st_mtime for p in candidates if p.resolve() != path.resolve()}
    newer = [p for p, mtime in mtimes.items() if mtime > path.stat().st_mtime]
    return sorted(newer, key=mtimes.__getitem__, reverse=True)


def _input_cause(err: BaseException) -> BaseException | None:
    """The bad-input error (an :class:`InputError`, or a missing file or folder) behind ``err``, if any."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (InputError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
            return current
        current = current.__cause__ or current.__context__
    return None


def read_checkpoint(path: str | Path, argument: str, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU (memory-mapped with ``mmap``: no tensor copied).

    Raises:
        InputError: Naming ``argument`` and the file: truncated, not a checkpoint, or holding pickled
            objects ``weights_only`` refuses.
    """
    problem = torch_file_problem(path)
    if problem is not None:
        raise InputError(f"{argument} {path}: {problem}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        reason = f"{type(err).__name__}: {first}"
        raise InputError(f"{argument} {path}: not a readable checkpoint ({reason})") from err


def checkpoint_class_path(path: Path) -> tuple[str | None, dict[str, Any]]:
    """The class path of the system a checkpoint holds (``None`` when it does not say) and its
    hyper-parameters, read with ``weights_only=True`` and memory-mapped (no tensor is copied)."""
    from lightning_gpv.export import checkpoint_family
    from lightning_gpv.systems import SYSTEMS

    checkpoint = read_checkpoint(path, "--ckpt_path", mmap=True)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict):
        return None, {}
    if isinstance(hparams.get("_class_path"), str):
        return hparams["_class_path"], hparams
    try:
        system = SYSTEMS[checkpoint_family(hparams, path)]
    except ValueError:
        return None, hparams
    return f"{system.__module__}.{system.__qualname__}", hparams


def _same_argument(given: Any, saved: Any) -> bool:
    """Whether a model argument equals the checkpoint's; a path equals its absolute form (systems store
    local paths absolute: :func:`~lightning_gpv.models.hub.absolute_if_local`)."""
    given, saved = _plain(given), _plain(saved)
    if isinstance(given, str) and isinstance(saved, str) and given != saved:
        return absolute_if_local(given) == saved
    return given == saved


def _plain(value: Any) -> Any:
    """A hyper-parameter as plain data, to compare a parsed argument with a stored one."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in dict(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def run_lightning_cli(
    args: Sequence[str] | None = None, run: bool = True, overwrite_config: bool = False
) -> GPVLightningCLI:
    """Run the Lightning CLI on ``args`` (``sys.argv[1:]`` when None).

    Args:
        args: The command line without the program name, e.g. ``["fit", "-c", "recipe.yaml"]``.
        run: ``False`` instantiates the trainer, model and data module without a subcommand.
        overwrite_config: Replace a ``config.yaml`` already in the log folder (the demo reruns there).
    """
    # LightningCLI warns when both ``args`` and ``sys.argv`` carry arguments; explicit ``args`` are the
    # whole command line (a caller's own flags in ``sys.argv``, e.g. the demo's, are not the CLI's).
    saved = sys.argv
    if args is not None:
        sys.argv = saved[:1]
    try:
        return GPVLightningCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=None if args is None else list(args),
            run=run,
            save_config_kwargs={"overwrite": overwrite_config},
        )
    finally:
        sys.argv = saved


COMMANDS = (
    ("make-shapes", "write the ShapesWorld synthetic data set (--root DIR --num-images N --seed S)"),
    ("build-vocab", "build GPV-1's answer vocabulary folder (--coco-root R --vqa-root R --out DIR)"),
    ("convert", "convert published GPV-1 or DETR weights to GPV1's names (gpv1|detr --checkpoint F --out D)"),
    ("export", "export a checkpoint as a self-contained model folder (--ckpt_path CKPT --out DIR)"),
    ("pretrain-encoder", "pretrain a tiny encoder on ShapesWorld (--part vision|tokenizer|detr --out F)"),
    ("plan", "memory per GPU of a VistaLLM run (--preset 7b --mode lora --gpus 8 --gpu-memory 80)"),
)
"""The commands ``main`` runs itself, before the Lightning CLI; each has its own ``--help``."""

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
"""The Lightning CLI's subcommands."""

OVERVIEW = "\n".join(
    [
        "usage: lightning-gpv COMMAND [options]",
        "",
        "Data and model commands (lightning-gpv COMMAND --help for their options):",
        *(f"  {name:<18}{line}" for name, line in COMMANDS),
        "",
        "Training and evaluation, the Lightning CLI (lightning-gpv fit --help etc.):",
        f"  {', '.join(LIGHTNING_COMMANDS)} -c RECIPE.yaml",
        "  (bad data or arguments end with a one-line error; add --debug for the traceback)",
        "",
        "The Lightning CLI's help follows.",
        "",
    ]
)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``lightning-gpv`` console script.

    Bad input (an :class:`~lightning_gpv.errors.InputError`: a data file, a field, an argument) ends a
    Lightning CLI command with its message on one line and exit code 2; ``--debug`` anywhere on the command
    line shows the traceback instead.
    """
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    if from_command_line:
        # Lightning's DDP launcher starts the other ranks with this process's sys.argv: keep the command
        # there (without --debug, which the Lightning CLI does not know).
        sys.argv = [sys.argv[0], *argv]
    if argv and argv[0] in ("-h", "--help"):
        print(OVERVIEW, flush=True)
    known = [name for name, _ in COMMANDS] + list(LIGHTNING_COMMANDS)
    if argv and not argv[0].startswith("-") and argv[0] not in known:
        close = difflib.get_close_matches(argv[0], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"lightning-gpv: error: unknown command {argv[0]!r}{hint} (commands: {', '.join(known)})",
              file=sys.stderr, flush=True)  # fmt: skip
        raise SystemExit(2)
    if argv and argv[0] == "make-shapes":
        from lightning_gpv.shapesworld.cli import main as make_shapes_main

        raise SystemExit(make_shapes_main(argv[1:]))
    if argv and argv[0] == "build-vocab":
        from lightning_gpv.build_vocab import main as build_vocab_main

        raise SystemExit(build_vocab_main(argv[1:]))
    if argv and argv[0] == "export":
        from lightning_gpv.export import main as export_main

        raise SystemExit(export_main(argv[1:]))
    if argv and argv[0] == "pretrain-encoder":
        from lightning_gpv.pretraining.command import main as pretrain_main

        raise SystemExit(pretrain_main(argv[1:]))
    if argv and argv[0] == "plan":
        from lightning_gpv.plan import main as plan_main

        raise SystemExit(plan_main(argv[1:]))
    if argv and argv[0] == "convert":
        from lightning_gpv.models.gpv1.convert import main as convert_main

        raise SystemExit(convert_main(argv[1:]))
    try:
        run_lightning_cli(None if from_command_line else argv)
    except InputError as err:
        if debug:
            raise
        print(f"lightning-gpv: error: {err}\n(add --debug for the traceback)", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
