"""A griffe extension: doctest runs in docstrings become `pycon` code blocks.

keras-lth writes examples the way Keras does, an `Example:` header followed
by unindented `>>>` lines. Markdown would read those as block quotes (and a
printed `[3, 2]` as a link reference), so this extension fences every run of
`>>>` / `...` lines and their output before mkdocstrings renders the page.
The docstrings themselves stay plain doctests.
"""

from __future__ import annotations

import griffe


def fence_doctests(text: str) -> str:
    """`text` with every doctest run (prompts and output) inside a ```pycon fence."""
    out, block, fenced = [], [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced = not fenced
        if not fenced and stripped.startswith(">>>"):
            block.append(line)
            continue
        if block and stripped:  # a continuation or an output line
            block.append(line)
            continue
        if block:
            out += _fence(block)
            block = []
        out.append(line)
    if block:
        out += _fence(block)
    return "\n".join(out)


def _fence(block):
    indent = block[0][: len(block[0]) - len(block[0].lstrip())]
    return [indent + "```pycon", *block, indent + "```"]


class DoctestFences(griffe.Extension):
    """Fence the doctests of every object's docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
