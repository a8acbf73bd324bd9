"""A restricted unpickler for the RefCOCO family's ``refs(*).p`` files (and gRefCOCO's ``grefs(*).p``).

Those files are Python-2 pickles of a list of dicts of strings, ints and floats. Unpickling runs whatever
the file says, so a plain ``pickle.load`` of a downloaded file can execute arbitrary code. The unpickler
here builds only what pickle opcodes build without looking up a global: ``dict``, ``list``, ``tuple``,
``str``, ``bytes``, ``int``, ``float``, ``bool`` and ``None``. Any global (a class, a function such as
``os.system``, ``copy_reg._reconstructor``, even ``builtins.set``) or persistent id is refused with
:class:`UnsafePickleError` before anything runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from datamodules.errors import DataFormatError


class UnsafePickleError(DataFormatError):
    """The pickle tried to build something other than plain containers and primitives."""


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that refuses every global and persistent id.

    Args:
        file: A binary file object.
        source: The file name, for error messages.
    """

    def __init__(self, file: io.BufferedIOBase | io.BytesIO, source: str = "<pickle>") -> None:
        # Python-2 ``str`` objects are bytes; RefCOCO's are ASCII, so UTF-8 decodes them losslessly.
        super().__init__(file, encoding="utf-8", errors="strict")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(
            self.source,
            None,
            f"refusing to unpickle global {module}.{name}: only plain containers (dict, list, tuple) and "
            "primitives (str, bytes, int, float, bool, None) are allowed",
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(self.source, None, "refusing to unpickle a persistent id")


def safe_load_pickle(path: str | Path) -> Any:
    """Load a pickle file that may hold only plain containers and primitives.

    Raises:
        UnsafePickleError: The pickle references a global or a persistent id (nothing was executed).
        DataFormatError: The file is missing, truncated or not a pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "file not found")
    with path.open("rb") as fh:
        try:
            return RestrictedUnpickler(fh, source=str(path)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError, TypeError) as err:
            raise DataFormatError(path, None, f"not a readable pickle ({type(err).__name__}: {err})") from err
        except (IndexError, KeyError, AttributeError, MemoryError, RecursionError) as err:
            raise DataFormatError(path, None, f"corrupt pickle ({type(err).__name__}: {err})") from err
