"""``lightning-gpv --help`` lists the hand-dispatched commands and then the Lightning CLI's own help."""

from __future__ import annotations

import pytest

from lightning_gpv.cli import main


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_command(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([flag])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("make-shapes", "build-vocab", "export", "convert", "fit", "validate", "test", "predict"):
        assert command in out, command
    assert out.index("make-shapes") < out.index("Lightning Trainer command line tool")


def test_subcommand_help_is_the_lightning_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--trainer" in out and "make-shapes" not in out
