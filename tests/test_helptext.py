"""Command help from module docstrings."""

from __future__ import annotations

import pytest

from lightning_gpv.helptext import epilog, first_paragraph

DOC = """``lightning-gpv thing --out DIR``: writes a folder of
:class:`~lightning_gpv.models.GPV1` weights (:data:`LIMIT` at most).

Run it so::

    lightning-gpv thing --out a \\\\
        --more

The end, ``x`` too.
"""


def test_the_description_is_the_whole_first_sentence_without_markup() -> None:
    assert (
        first_paragraph(DOC)
        == "lightning-gpv thing --out DIR: writes a folder of GPV1 weights (LIMIT at most)."
    )


def test_the_epilog_keeps_example_commands_line_by_line() -> None:
    assert epilog(DOC) == "Run it so:\n\n  lightning-gpv thing --out a \\\\\n      --more\n\nThe end, x too."


@pytest.mark.parametrize(
    ("command", "sentence_end"),
    [
        (
            "export",
            "to an adapter folder that holds only what training changed and loads over the base models.",
        ),
        ("build-vocab", "answer vocabulary (and, for tiny models, a WordPiece vocab.txt)."),
    ],
)
def test_the_commands_help_ends_its_first_sentence(
    command: str, sentence_end: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_gpv.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert sentence_end in out
    assert "``" not in out and ":func:" not in out and ":data:" not in out
