"""The error class of bad input: what the user gave (a file, a field of it, an argument) is wrong.

Its message names the file, field or argument, so the ``lightning-gpv`` command prints it as one line
without the traceback (``--debug`` keeps the traceback). Readers' ``DataFormatError``, the converters'
errors, the checkpoint errors, unreadable images and the checks of constructor arguments and config fields
(systems, data modules, configs and presets, the coordinate codec: what a recipe or a ``--model.init_args.X``
override sets) are ``InputError``s; every other exception is a defect and shows its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input named in the message (a ``ValueError``, so an ``except ValueError`` still catches it).

    Args:
        args: The message (and any other arguments of ``ValueError``).
        message: torch's report of the error in a data-loader worker: ``"Caught X in DataLoader worker
            process N. Original Traceback ...`` ending with the original ``"module.X: text"`` line. torch
            re-raises such an error as ``type(err)(message=report)`` when the class has a ``message``
            attribute (:attr:`message`), which keeps its type; the report's last line becomes the
            message and the whole report stays in :attr:`worker_report`.
    """

    def __init__(self, *args: object, message: str | None = None) -> None:
        self.worker_report = message
        if message is not None:
            lines = [line for line in message.splitlines() if line.strip()]
            args = (lines[-1] if lines else message, *args)
        super().__init__(*args)

    @property
    def message(self) -> str:
        """The message (its presence is also torch's cue to re-raise a worker's error with ``message=``)."""
        return str(self)
