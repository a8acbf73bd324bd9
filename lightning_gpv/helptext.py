"""Command-line help from module docstrings: the first paragraph as plain text."""

from __future__ import annotations

import inspect
import re
import textwrap

_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")


def _role_text(match: re.Match[str]) -> str:
    # ``:func:`~a.b.c``` shows ``c`` in Sphinx; ``:data:`X``` shows ``X``.
    return match.group(2).rsplit(".", 1)[-1] if match.group(1) else match.group(2)


def plain_text(text: str) -> str:
    """``text`` without reStructuredText roles and inline-literal backticks, on one line."""
    return " ".join(_ROLE.sub(_role_text, text).replace("``", "").split())


def first_paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring as plain text (an argparse ``description``)."""
    return plain_text(inspect.cleandoc(doc or "").split("\n\n")[0])


def epilog(doc: str | None, width: int = 100) -> str:
    """The paragraphs after the first as plain text for ``argparse.RawDescriptionHelpFormatter``: prose
    wrapped at ``width``, indented (literal) blocks such as example commands kept line by line."""
    parts = []
    for block in inspect.cleandoc(doc or "").split("\n\n")[1:]:
        if block.startswith((" ", "\t")):
            parts.append(textwrap.indent(textwrap.dedent(block), "  "))
        else:
            prose = plain_text(block)
            parts.append(textwrap.fill(prose[:-1] if prose.endswith("::") else prose, width))
    return "\n\n".join(parts)


__all__ = ["epilog", "first_paragraph", "plain_text"]
