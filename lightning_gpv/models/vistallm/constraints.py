"""Constrained decoding of VistaLLM answers: the grammar of coordinate groups as a per-sample state machine.

:class:`~lightning_gpv.models.vistallm.codec.CoordinateCodec` writes every object of an answer as one
bracketed group of coordinate tokens and joins several objects with a separator (see
:mod:`~lightning_gpv.models.vistallm.codec.answers`)::

    box list    ::= "" | box ("<bsep>" box)*              box  ::= "[" coord{4} "]"
    mask list   ::= "" | mask ("<msep>" mask)*            mask ::= "[" coord{2 * num_mask_points} "]"

The empty answer (the end token right away) is VistaLLM's "no target" (gRefCOCO). Spot captioning writes
its caption, then a box list; AttCoSeg writes ``"Images i and j: "``, then a mask list; text tasks write
no coordinates at all. ``[``, ``]`` and the end token are ordinary tokens of the LLM tokenizer (which ones
depends on the tokenizer: ``"["`` and ``"▁["`` alike), the coordinate tokens and the separators are the
added tokens.

:class:`CoordinateGrammar` holds that grammar over token ids, and :class:`AnswerFormat` what one task's
answer looks like (:func:`answer_format`). A sample's decoding state is a :class:`GrammarState`;
:meth:`CoordinateGrammar.allowed` gives the tokens that may come next (``None``: any) and
:meth:`CoordinateGrammar.advance` the state after a token. Rules, beyond the grammar above:

* Coordinate tokens and separators are only valid inside (respectively between) groups: every answer
  forbids them elsewhere, text answers forbid them everywhere. Without that, a stray ``<c5>`` in a caption
  or a ``<bsep>`` after free text would be read (and reported) as garbage by the parser.
* Where a group may start after free text (spot captioning, AttCoSeg) every bracket token is a group's:
  the exact opener tokens open a group, and other tokens holding ``[`` or ``]`` are forbidden there, so
  ``[`` never starts a bracket of plain text that the parser would have to guess about. Text answers keep
  brackets as text (the parser reads ``[holding]`` as words).
* A box's second corner is not left of or above its first (``x1 >= x0``, ``y1 >= y0``, as the codec
  writes xyxy boxes): the parser would swap such corners and report the answer as a parse failure.
* Counts of objects follow the task's targets: REC and RES answer exactly one object (what
  ``answer_well_formed`` checks), CoSeg and AttCoSeg at least one, GREC, GRES, localization and spot
  captioning any number, none included.
* Budget: a group starts (opener, or separator then opener) only when the tokens left can hold it whole,
  opener and closer included; otherwise the answer ends. A group cut by ``max_new_tokens`` would be
  dropped by the parser anyway, and it would make the answer a parse failure. A group the format requires
  (AttCoSeg's first mask after its text) opens at the last step that still holds it.

Built once per tokenizer (:meth:`CoordinateGrammar.from_tokenizer`); the vocabulary masks are cached per
width and device, so one decoding step costs a stack of ``B`` precomputed ``(V,)`` rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import Enum

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from lightning_gpv.models.vistallm.codec import (
    BOX_SEP,
    BOX_TASKS,
    MASK_SEP,
    MASK_TASKS,
    CoordinateCodec,
)
from lightning_gpv.tasks.catalogue import Task

OPENER = "["
CLOSER = "]"


class ObjectKind(Enum):
    """What one coordinate group of an answer is."""

    BOX = "box"
    MASK = "mask"


@dataclass(frozen=True)
class AnswerFormat:
    """The shape of one answer, as the codec writes it for a task.

    Attributes:
        kind: The objects of the answer; ``None`` for a text answer (no coordinates anywhere).
        leading_text: Free text may come before the first group (spot captioning, AttCoSeg).
        min_objects: Fewest groups; the end token is forbidden before them (unless the token budget is
            too small to write one).
        max_objects: Most groups; ``None``: no limit.
    """

    kind: ObjectKind | None
    leading_text: bool = False
    min_objects: int = 0
    max_objects: int | None = None

    def __post_init__(self) -> None:
        if self.min_objects < 0 or (self.max_objects is not None and self.max_objects < self.min_objects):
            raise ValueError(
                f"need 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if self.kind is None and (self.min_objects or self.leading_text):
            raise ValueError("a text answer (kind=None) has no objects and no leading_text flag")


TEXT_ANSWER = AnswerFormat(None)
"""Captioning, VQA, NLVR2, REG, ...: free text without coordinates."""


def answer_format(task: Task) -> AnswerFormat:
    """The :class:`AnswerFormat` of a task's answers (see the module docstring for the counts)."""
    task = Task(task)
    if task is Task.REC:
        return AnswerFormat(ObjectKind.BOX, min_objects=1, max_objects=1)
    if task is Task.RES:
        return AnswerFormat(ObjectKind.MASK, min_objects=1, max_objects=1)
    if task is Task.COSEG:
        return AnswerFormat(ObjectKind.MASK, min_objects=1)
    if task is Task.ATTCOSEG:
        return AnswerFormat(ObjectKind.MASK, leading_text=True, min_objects=1)
    if task is Task.SPOT_CAPTIONING:
        return AnswerFormat(ObjectKind.BOX, leading_text=True)
    if task in BOX_TASKS:  # GREC, localization: any number, "" is "no target"
        return AnswerFormat(ObjectKind.BOX)
    if task in MASK_TASKS:  # GRES
        return AnswerFormat(ObjectKind.MASK)
    return TEXT_ANSWER


class Phase(Enum):
    """Where a sample is in its answer."""

    TEXT = "text"
    """Free text: a text answer, or the text before the first group."""
    START = "start"
    """Nothing written yet of an answer that is a list of objects only (a group or the end come next)."""
    GROUP = "group"
    """Inside a group: ``GrammarState.coords`` coordinates written since its opener."""
    AFTER_GROUP = "after_group"
    """A group just closed: a separator or the end come next."""
    AFTER_SEP = "after_sep"
    """A separator just written: an opener comes next."""
    END = "end"
    """The end token was written (the sample is padded from here)."""
    FREE = "free"
    """A token the grammar forbids was fed (by a caller that did not mask): the sample is unconstrained."""


@dataclass(frozen=True)
class GrammarState:
    """The decoding state of one sample (immutable: :meth:`CoordinateGrammar.advance` returns a new one).

    Attributes:
        format: The answer's format.
        phase: Where the sample is.
        coords: Coordinates written in the open group (``Phase.GROUP``).
        objects: Groups closed so far.
        corner: Bins ``(x0, y0)`` of the open box's first corner, as far as written (``()`` otherwise).
    """

    format: AnswerFormat
    phase: Phase
    coords: int = 0
    objects: int = 0
    corner: tuple[int, ...] = ()


class _Base(Enum):
    """The tokens a :class:`_Rule` starts from."""

    NONE = "none"
    """No token."""
    ANY = "any"
    """Every token (a sample the grammar does not constrain, in a batch with constrained ones)."""
    TEXT = "text"
    """Every token but the coordinates and the separators."""
    TEXT_BEFORE_GROUP = "text_before_group"
    """``TEXT`` without the bracket tokens (a group may open: every bracket is a group's)."""
    COORDS = "coords"
    """The coordinate tokens of bins ``>= _Rule.min_bin``."""


@dataclass(frozen=True)
class _Rule:
    """One set of allowed tokens: ``base``, plus ``extra``, minus ``without`` (hashable: masks are cached
    per rule)."""

    base: _Base
    extra: frozenset[int] = frozenset()
    without: frozenset[int] = frozenset()
    min_bin: int = 0


class CoordinateGrammar:
    """The codec's answer grammar over the token ids of one LLM tokenizer.

    Args:
        codec: The model's codec (``num_mask_points`` fixes the length of a mask group).
        vocab_size: Tokens of the tokenizer (``len(tokenizer)``); :meth:`allowed` answers among them.
        coord_ids: Ids of the coordinate tokens in bin order (``coord_ids[b]`` is ``<c{b}>``).
        box_sep_id: Id of ``<bsep>``.
        mask_sep_id: Id of ``<msep>``.
        eos_id: The end token's id.
        opener_ids: Ids of the tokens that are exactly ``[`` (up to surrounding whitespace).
        closer_ids: Ids of the tokens that are exactly ``]``.
        bracket_ids: Ids of every token whose text holds ``[`` or ``]`` (openers and closers are added).

    Raises:
        ValueError: no opener or no closer, overlapping id sets, or an id outside the vocabulary.
    """

    def __init__(
        self,
        codec: CoordinateCodec,
        *,
        vocab_size: int,
        coord_ids: Sequence[int],
        box_sep_id: int,
        mask_sep_id: int,
        eos_id: int,
        opener_ids: Iterable[int],
        closer_ids: Iterable[int],
        bracket_ids: Iterable[int] = (),
    ) -> None:
        self.codec = codec
        self.vocab_size = int(vocab_size)
        self.coord_bins = {int(i): b for b, i in enumerate(coord_ids)}
        self.coord_ids = frozenset(self.coord_bins)
        if len(self.coord_ids) != codec.num_bins:
            raise ValueError(f"{len(self.coord_ids)} distinct coordinate ids for {codec.num_bins} bins")
        self.box_sep_id, self.mask_sep_id, self.eos_id = int(box_sep_id), int(mask_sep_id), int(eos_id)
        self.opener_ids = frozenset(int(i) for i in opener_ids)
        self.closer_ids = frozenset(int(i) for i in closer_ids)
        self.bracket_ids = frozenset(int(i) for i in bracket_ids) | self.opener_ids | self.closer_ids
        if not self.opener_ids or not self.closer_ids:
            raise ValueError(f"the tokenizer needs a token for {OPENER!r} and one for {CLOSER!r}")
        singles = {self.box_sep_id, self.mask_sep_id, self.eos_id}
        sets = (self.coord_ids, self.opener_ids, self.closer_ids, singles)
        if len(singles) != 3 or sum(len(s) for s in sets) != len(frozenset().union(*sets)):
            raise ValueError("coordinate, opener, closer, separator and end ids must all differ")
        if not all(0 <= i < self.vocab_size for s in (*sets, self.bracket_ids) for i in s):
            raise ValueError(f"grammar ids outside the vocabulary of {self.vocab_size} tokens")
        self._structure = self.coord_ids | {self.box_sep_id, self.mask_sep_id}
        self._masks: dict[tuple[_Rule, int, torch.device], torch.Tensor] = {}
        self._bin_tables: dict[tuple[int, torch.device], torch.Tensor] = {}

    @classmethod
    def from_tokenizer(cls, codec: CoordinateCodec, tokenizer: PreTrainedTokenizerBase) -> CoordinateGrammar:
        """The grammar of ``codec``'s answers in ``tokenizer``'s ids (the tokenizer of
        ``load_llm_tokenizer``, with the added tokens).

        Openers and closers are found by decoding every id; then the codec's own serializations (one box,
        two boxes, two masks, a caption and boxes, the empty answer), tokenized as the processor tokenizes
        training answers, must be accepted.

        Raises:
            ValueError: an added token is missing, or the tokenizer writes the codec's answers in a way
                this grammar does not accept (e.g. ``]`` merged with the text around it).
        """
        names = [*codec.coordinate_tokens(), BOX_SEP, MASK_SEP]
        ids = [int(i) for i in tokenizer.convert_tokens_to_ids(names)]
        unk = tokenizer.unk_token_id
        if unk is not None and unk in ids:
            missing = [n for n, i in zip(names, ids) if i == unk]
            raise ValueError(f"the tokenizer lacks the added tokens {missing[:4]} (see load_llm_tokenizer)")
        # One batched decode of every id: the opener and closer spellings differ between tokenizers
        # ("[", "▁[", "Ġ[" at a word start).
        texts = tokenizer.batch_decode(
            [[i] for i in range(len(tokenizer))],
            skip_special_tokens=False,
            clean_up_tokenization_spaces=False,
        )
        added = set(ids)
        plain = [(i, t.strip()) for i, t in enumerate(texts) if i not in added]
        grammar = cls(
            codec,
            vocab_size=len(tokenizer),
            coord_ids=ids[: codec.num_bins],
            box_sep_id=ids[-2],
            mask_sep_id=ids[-1],
            eos_id=int(tokenizer.eos_token_id),
            opener_ids=[i for i, t in plain if t == OPENER],
            closer_ids=[i for i, t in plain if t == CLOSER],
            bracket_ids=[i for i, t in plain if OPENER in t or CLOSER in t],
        )
        grammar._check_codec_answers(tokenizer)
        return grammar

    def _check_codec_answers(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Raise ``ValueError`` unless the codec's answers, tokenized, are accepted."""
        codec, size = self.codec, 100.0
        boxes = np.array([[10.0, 20.0, 60.0, 70.0], [0.0, 0.0, size, size]])
        polygons = [np.random.default_rng(i).uniform(0, size, (codec.num_mask_points, 2)) for i in range(2)]
        two_boxes = codec.format_boxes(boxes, size, size, "tokens")
        examples = [
            (codec.format_boxes(boxes[:1], size, size, "tokens"), answer_format(Task.REC)),
            (two_boxes, answer_format(Task.GREC)),
            (codec.format_masks(polygons, size, size, "tokens"), answer_format(Task.GRES)),
            (f"a red circle {two_boxes}", answer_format(Task.SPOT_CAPTIONING)),
            ("", answer_format(Task.GREC)),
        ]
        for text, fmt in examples:
            ids = tokenizer(text, add_special_tokens=False).input_ids if text else []
            if not self.accepts(fmt, [*ids, self.eos_id]):
                pieces = tokenizer.convert_ids_to_tokens(ids)[:12]
                raise ValueError(
                    f"the tokenizer writes the codec's answer {text[:40]!r} as {pieces}, which the "
                    "coordinate grammar does not accept"
                )

    # ------------------------------------------------------------------------------------------------
    # The state machine

    def group_length(self, kind: ObjectKind) -> int:
        """Coordinates in one group: 4 for a box, ``2 * num_mask_points`` for a mask."""
        return 4 if kind is ObjectKind.BOX else 2 * self.codec.num_mask_points

    @property
    def budget_horizon(self) -> int:
        """Tokens left (this one included) above which the budget changes no rule: a mask group with its
        separator, opener and closer (``2 * num_mask_points + 3``), the longest group."""
        return self.group_length(ObjectKind.MASK) + 3

    def must_end(self, state: GrammarState) -> bool:
        """Whether the end token is all that may follow ``state`` under any budget (a whole answer)."""
        rule = self._rule(state, None)
        return rule is not None and rule.base is _Base.NONE and rule.extra == frozenset({self.eos_id})

    def separator_id(self, kind: ObjectKind) -> int:
        """The separator between two groups of ``kind``."""
        return self.box_sep_id if kind is ObjectKind.BOX else self.mask_sep_id

    def start(self, fmt: AnswerFormat) -> GrammarState:
        """The state before the first answer token."""
        leading = fmt.kind is None or fmt.leading_text
        return GrammarState(fmt, Phase.TEXT if leading else Phase.START)

    def _rule(self, state: GrammarState, remaining: int | None) -> _Rule | None:
        """Which tokens may follow ``state`` (``None``: any); ``remaining`` counts this step."""
        fmt, phase = state.format, state.phase
        if phase in (Phase.END, Phase.FREE):
            return None
        if fmt.kind is None:
            return _Rule(_Base.TEXT)
        if phase is Phase.GROUP:
            length = self.group_length(fmt.kind)
            if state.coords == length:
                return _Rule(_Base.NONE, self.closer_ids)
            # x1 and y1 of a box (its 3rd and 4th values) not below x0 and y0
            low = state.corner[state.coords - 2] if fmt.kind is ObjectKind.BOX and state.coords >= 2 else 0
            return _Rule(_Base.COORDS, min_bin=low)
        if phase is Phase.AFTER_SEP:
            return _Rule(_Base.NONE, self.opener_ids)
        # A group needs room for its opener, its coordinates and its closer (and a separator before it).
        length = self.group_length(fmt.kind)
        more = fmt.max_objects is None or state.objects < fmt.max_objects
        can_open = more and (remaining is None or remaining >= length + 2)
        can_add = more and (remaining is None or remaining >= length + 3)
        end = frozenset({self.eos_id})
        if phase is Phase.AFTER_GROUP:
            may_end = state.objects >= fmt.min_objects or not can_add
            return _Rule(_Base.NONE, (end if may_end else frozenset()) | (
                frozenset({self.separator_id(fmt.kind)}) if can_add else frozenset()))  # fmt: skip
        may_end = state.objects >= fmt.min_objects or not can_open
        opener = self.opener_ids if can_open else frozenset()
        if phase is Phase.START:
            return _Rule(_Base.NONE, opener | (end if may_end else frozenset()))
        # Phase.TEXT before the first group: free text, an opener when a group fits, the end when allowed;
        # a group the format requires starts at the last step that still holds it whole.
        if state.objects < fmt.min_objects and can_open and remaining is not None and remaining <= length + 2:
            return _Rule(_Base.NONE, self.opener_ids)
        return _Rule(_Base.TEXT_BEFORE_GROUP, opener, frozenset() if may_end else end)

    def _rule_allows(self, rule: _Rule, token: int) -> bool:
        if token in rule.without:
            return False
        if token in rule.extra:
            return True
        if rule.base is _Base.ANY:
            return True
        if rule.base is _Base.COORDS:
            return self.coord_bins.get(token, -1) >= rule.min_bin
        if rule.base is _Base.NONE or token in self._structure:
            return False
        return rule.base is _Base.TEXT or token not in self.bracket_ids

    def allowed(self, state: GrammarState, remaining: int | None = None) -> frozenset[int] | None:
        """The token ids (below ``vocab_size``) that may follow ``state``, or ``None`` when any may (after
        the end, or in a sample left free).

        Args:
            state: The sample's state.
            remaining: Tokens the sample may still generate, this one included (``None``: no budget).
        """
        rule = self._rule(state, remaining)
        if rule is None:
            return None
        return frozenset(i for i in range(self.vocab_size) if self._rule_allows(rule, i))

    def is_allowed(self, state: GrammarState, token: int, remaining: int | None = None) -> bool:
        """Whether ``token`` may follow ``state``."""
        rule = self._rule(state, remaining)
        return rule is None or self._rule_allows(rule, int(token))

    def advance(self, state: GrammarState, token: int) -> GrammarState:
        """The state after ``token``.

        A token the grammar forbids leaves the sample in :attr:`Phase.FREE`, where it is no longer
        constrained; that never happens to a sample whose logits were masked with :meth:`mask`.
        """
        token = int(token)
        phase = state.phase
        if phase in (Phase.END, Phase.FREE):
            return state
        if not self.is_allowed(state, token):
            return replace(state, phase=Phase.FREE)
        if token == self.eos_id and phase is not Phase.GROUP:
            return replace(state, phase=Phase.END)
        if phase is Phase.GROUP:
            if token in self.coord_ids:
                first = state.format.kind is ObjectKind.BOX and state.coords < 2
                corner = (*state.corner, self.coord_bins[token]) if first else state.corner
                return replace(state, coords=state.coords + 1, corner=corner)
            return replace(state, phase=Phase.AFTER_GROUP, coords=0, corner=(), objects=state.objects + 1)
        if phase is Phase.AFTER_GROUP:  # the separator
            return replace(state, phase=Phase.AFTER_SEP)
        if token in self.opener_ids and state.format.kind is not None:
            return replace(state, phase=Phase.GROUP, coords=0)
        return state  # free text

    def accepts(self, fmt: AnswerFormat, tokens: Iterable[int], max_new_tokens: int | None = None) -> bool:
        """Whether the grammar allows each of ``tokens`` in turn from the start of a ``fmt`` answer, up to
        the end token (what follows it is not looked at). With ``max_new_tokens`` the budget rule applies.
        """
        state = self.start(fmt)
        for step, token in enumerate(tokens):
            if state.phase is Phase.END:
                break
            remaining = None if max_new_tokens is None else max_new_tokens - step
            if not self.is_allowed(state, token, remaining):
                return False
            state = self.advance(state, token)
        return True

    # ------------------------------------------------------------------------------------------------
    # Masks

    def _vocab_mask(self, rule: _Rule, vocab_size: int, device: torch.device) -> torch.Tensor:
        """``(vocab_size,)`` bool, True on the tokens ``rule`` allows (cached per rule, width, device).
        Ids at or beyond ``self.vocab_size`` (a padded LLM vocabulary) count as free text."""
        key = (rule, vocab_size, device)
        cached = self._masks.get(key)
        if cached is not None:
            return cached
        if rule.base is _Base.COORDS and rule.min_bin > 0:
            # One per bin of a first corner: computed, not cached (num_bins x V would pile up).
            return self._vocab_mask(replace(rule, min_bin=0), vocab_size, device) & (
                self._bins(vocab_size, device) >= rule.min_bin
            )

        def ids(values: Iterable[int]) -> torch.Tensor:
            return torch.tensor(sorted(v for v in values if v < vocab_size), dtype=torch.long)

        text = rule.base in (_Base.TEXT, _Base.TEXT_BEFORE_GROUP)
        mask = torch.full((vocab_size,), rule.base is _Base.ANY or text, dtype=torch.bool)
        if text:
            mask[ids(self._structure)] = False
        if rule.base is _Base.COORDS:
            mask[ids(self.coord_ids)] = True
        if rule.base is _Base.TEXT_BEFORE_GROUP:
            mask[ids(self.bracket_ids)] = False
        mask[ids(rule.extra)] = True
        mask[ids(rule.without)] = False
        mask = mask.to(device)
        self._masks[key] = mask
        return mask

    def _bins(self, vocab_size: int, device: torch.device) -> torch.Tensor:
        """``(vocab_size,)`` long: the bin of each coordinate token, -1 on every other token (cached)."""
        key = (vocab_size, device)
        if key not in self._bin_tables:
            bins = torch.full((vocab_size,), -1, dtype=torch.long)
            ids = torch.tensor(list(self.coord_bins), dtype=torch.long)
            bins[ids] = torch.tensor(list(self.coord_bins.values()), dtype=torch.long)
            self._bin_tables[key] = bins.to(device)
        return self._bin_tables[key]

    def mask(
        self, states: Sequence[GrammarState], remaining: int | None, vocab_size: int, device: torch.device
    ) -> torch.Tensor | None:
        """The allowed tokens of a batch, or ``None`` when no sample is constrained.

        Args:
            states: ``B`` sample states.
            remaining: Tokens each sample may still generate, this one included (``None``: no budget).
            vocab_size: Width ``V`` of the logits (at least the tokenizer's; ids beyond it are free text).
            device: Device of the logits.

        Returns:
            ``(B, V)`` bool, True where a token is allowed; every row has at least one True.
        """
        rules = [self._rule(s, remaining) for s in states]
        if all(r is None for r in rules):
            return None
        if vocab_size < self.vocab_size:
            raise ValueError(f"logits of width {vocab_size} for a vocabulary of {self.vocab_size} tokens")
        free = _Rule(_Base.ANY)
        return torch.stack([self._vocab_mask(r or free, vocab_size, device) for r in rules])


__all__ = [
    "TEXT_ANSWER",
    "AnswerFormat",
    "CoordinateGrammar",
    "GrammarState",
    "ObjectKind",
    "Phase",
    "answer_format",
]
