"""Prompt templates of both families and how they are rendered.

Two banks share one interface:

* :data:`GPV1_PROMPTS`: the task descriptions of GPV-1 (Gupta et al., Table 7): 14 captioning, 4
  classification and 18 localization prompts (``[OBJECT]`` is the category name), the question itself
  for VQA and the expression itself for referring expressions. The paper's table, as extracted, lists 13
  captioning prompts; the 14th ("Generate a description for the image.") is in the reference code, which
  also ends the four "What is ..." prompts with "." where the paper prints "?". We follow the paper.
* :data:`VISTALLM_PROMPTS`: detailed instructions in the style of VistaLLM's Table E.1, written anew for
  this package, at least 8 paraphrases per task. Slots: ``<image>`` (stays in the text: the model puts
  each image's visual tokens there), ``<expr>``, ``<question>``, ``<category>``, ``<objs>`` (a serialized
  region) and ``<point>`` (a serialized point).

Training picks a template with a caller-supplied generator so that seeded data sets are reproducible;
evaluation passes ``index=0`` (or any fixed index) for one fixed template.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lightning_gpv.errors import InputError
from lightning_gpv.tasks.catalogue import IMAGE_TOKEN, Family, Task, task_spec
from lightning_gpv.tasks.prompt_texts import (
    GPV1_TEMPLATES,
    LAST_POINT_MARKER,
    POINTS_MARKER,
    VISTALLM_TEMPLATES,
)

SLOT_MARKERS: dict[str, tuple[str, ...]] = {
    "expr": ("<expr>",),
    "question": ("<question>",),
    "category": ("<category>", "[OBJECT]"),
    "region": ("<objs>",),
    "point": ("<point>",),
}
"""Slot name (the keyword argument of :meth:`PromptBank.render`) to the markers it fills."""

_ANY_MARKER = re.compile("|".join(re.escape(m) for ms in SLOT_MARKERS.values() for m in ms))
_SLOT_OF_MARKER = {m: name for name, ms in SLOT_MARKERS.items() for m in ms}

Generator = random.Random | np.random.Generator


def _pick(n: int, rng: Generator) -> int:
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(n))
    return rng.randrange(n)


@dataclass(frozen=True)
class PromptBank:
    """Templates of one model family, by task.

    Attributes:
        family: The model family these prompts belong to.
        templates: Task to its templates, in a fixed order (``index`` refers to it).
    """

    family: Family
    templates: Mapping[Task, tuple[str, ...]]

    def templates_for(self, task: Task | str) -> tuple[str, ...]:
        """The templates of ``task``.

        Raises:
            InputError: This family does not do ``task`` (GPV-1 asked for a mask, ...), naming its tasks.
        """
        task = task_spec(task).task
        if task not in self.templates:
            known = ", ".join(t.value for t in self.templates)
            raise InputError(f"{self.family.value} does not do task {task.value!r}; its tasks: {known}")
        return self.templates[task]

    def render(
        self,
        task: Task | str,
        *,
        rng: Generator | None = None,
        index: int | None = None,
        num_images: int = 1,
        mask_points: int | None = None,
        **slots: str,
    ) -> str:
        """Render one template of ``task``.

        Args:
            task: The task.
            rng: Picks the template at random (``random.Random`` or ``numpy.random.Generator``).
            index: Picks a fixed template instead (evaluation). With neither, the first template is used.
            num_images: How many images the sample holds. A template with a single ``<image>`` slot
                gets ``num_images`` placeholders there (co-segmentation over k images); a template with
                several slots must have exactly ``num_images`` (NLVR2's left and right image).
            mask_points: The contour points per mask answer, written where a mask instruction names
                them (:data:`~lightning_gpv.tasks.prompt_texts.POINTS_MARKER`); required by those templates.
            **slots: Values of the slots the template uses: ``expr``, ``question``, ``category``,
                ``region``, ``point``.

        Returns:
            The instruction with every slot filled, ``<image>`` placeholders included.

        Raises:
            ValueError: An unknown slot name, a slot the template needs but was not given, both or
                neither of ``rng``/``index`` misuse, a number of images the template cannot hold, or a
                mask template without a valid ``mask_points``.
        """
        unknown = set(slots) - set(SLOT_MARKERS)
        if unknown:
            raise ValueError(f"unknown prompt slot(s) {sorted(unknown)}; expected {sorted(SLOT_MARKERS)}")
        if rng is not None and index is not None:
            raise ValueError("pass either rng (random template) or index (fixed template), not both")
        templates = self.templates_for(task)
        if index is None:
            index = _pick(len(templates), rng) if rng is not None else 0
        if not 0 <= index < len(templates):
            raise ValueError(f"template index {index} out of range for {len(templates)} templates")
        text = templates[index]
        # Images first and slots in one pass over the template: a slot value that itself contains a marker
        # (an expression mentioning "<image>" or "[OBJECT]") is inserted verbatim, never re-expanded.
        if self.family is Family.VISTALLM:
            text = _place_images(text, num_images)
        text = fill_point_count(text, mask_points)

        def fill(match: re.Match[str]) -> str:
            name = _SLOT_OF_MARKER[match.group()]
            if slots.get(name) is None:
                raise ValueError(f"template {templates[index]!r} needs slot {name!r} ({match.group()})")
            return slots[name]

        return _ANY_MARKER.sub(fill, text)

    def slots_of(self, task: Task | str) -> set[str]:
        """The slot names any template of ``task`` uses."""
        used: set[str] = set()
        for t in self.templates_for(task):
            used |= {name for name, ms in SLOT_MARKERS.items() if any(m in t for m in ms)}
        return used


def _place_images(text: str, num_images: int) -> str:
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    count = text.count(IMAGE_TOKEN)
    if count == num_images:
        return text
    if count == 1:
        return text.replace(IMAGE_TOKEN, " ".join([IMAGE_TOKEN] * num_images))
    raise ValueError(f"template has {count} {IMAGE_TOKEN} slots but the sample has {num_images} images")


def fill_point_count(text: str, mask_points: int | None) -> str:
    """``text`` with the mask point-count markers of :mod:`~lightning_gpv.tasks.prompt_texts` replaced by
    ``mask_points`` (and ``mask_points - 1``); text without them is returned as is."""
    if POINTS_MARKER not in text and LAST_POINT_MARKER not in text:
        return text
    if mask_points is None or isinstance(mask_points, bool) or int(mask_points) != mask_points:
        raise ValueError(f"this mask template needs mask_points (an integer >= 3), got {mask_points!r}")
    if mask_points < 3:
        raise ValueError(f"mask_points must be >= 3 (a polygon), got {mask_points}")
    n = int(mask_points)
    return text.replace(POINTS_MARKER, str(n)).replace(LAST_POINT_MARKER, str(n - 1))


def unfilled_slots(text: str) -> list[str]:
    """Slot markers still present in a rendered prompt (empty when fully rendered)."""
    return _ANY_MARKER.findall(text)


GPV1_PROMPTS = PromptBank(Family.GPV1, GPV1_TEMPLATES)
"""GPV-1's task descriptions (paper Table 7)."""

VISTALLM_PROMPTS = PromptBank(Family.VISTALLM, VISTALLM_TEMPLATES)
"""VistaLLM-style detailed instructions (after the paper's Table E.1), at least 8 per task."""

PROMPTS: dict[Family, PromptBank] = {Family.GPV1: GPV1_PROMPTS, Family.VISTALLM: VISTALLM_PROMPTS}
