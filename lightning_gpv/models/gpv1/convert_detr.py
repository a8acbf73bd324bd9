"""Converting published DETR weights (facebookresearch/detr layout) into GPV-1's visual module, and the
conversion machinery shared with :mod:`lightning_gpv.models.gpv1.convert`.

The original DETR stores a torchvision ResNet under ``backbone.0.body`` (frozen batch norm: ``weight``,
``bias``, ``running_mean``, ``running_var``), a post-norm ``transformer`` built from
``nn.MultiheadAttention`` (fused ``in_proj_weight``/``in_proj_bias`` holding the query, key and value
projections stacked in that order), ``query_embed``, ``input_proj`` (1x1 conv), ``bbox_embed`` (3-layer
MLP) and ``class_embed`` (``num_classes + 1`` logits, the last one "no object"). GPV-1's visual module
(:class:`~lightning_gpv.models.gpv1.detr.DetrRegionEncoder`) wraps transformers' DETR with its own ResNet:

======================================  =================================================================
original DETR                           ``GPV1`` state dict (``R`` = ``visual.detr.backbone.model.``)
======================================  =================================================================
``backbone.0.body.conv1`` / ``bn1``     ``R`` ``embedder.embedder.convolution`` / ``.normalization``
``backbone.0.body.layer{s}.{b}.``       ``R`` ``encoder.stages.{s-1}.layers.{b}.``
``conv{j}`` / ``bn{j}``                 ``layer.{j-1}.convolution`` / ``layer.{j-1}.normalization``
``downsample.0`` / ``downsample.1``     ``shortcut.convolution`` / ``shortcut.normalization``
``transformer.{stack}.layers.{i}.``     ``visual.detr.{stack}.layers.{i}.``
``self_attn.in_proj_{weight,bias}``     ``self_attn.{q,k,v}_proj.{weight,bias}`` (split in three)
``self_attn.out_proj``                  ``self_attn.o_proj``
``multihead_attn.in_proj_*``            ``encoder_attn.{q,k,v}_proj.*`` (split in three)
``multihead_attn.out_proj``             ``encoder_attn.o_proj``
``linear1`` / ``linear2``               ``mlp.fc1`` / ``mlp.fc2``
encoder ``norm1`` / ``norm2``           ``self_attn_layer_norm`` / ``final_layer_norm``
decoder ``norm1`` / ``norm2``           ``self_attn_layer_norm`` / ``encoder_attn_layer_norm``
decoder ``norm3``                       ``final_layer_norm``
``transformer.decoder.norm``            ``visual.detr.decoder.layernorm``
``query_embed``                         ``visual.detr.query_position_embeddings``
``input_proj``                          ``visual.detr.input_projection``
``bbox_embed.layers.{k}``               ``visual.box_head.layers.{k}``
``class_embed`` (2 rows only)           ``visual.objectness``
======================================  =================================================================

Stride placement agrees: torchvision's bottleneck strides its 3x3 convolution, as transformers' ResNet
does (``downsample_in_bottleneck=False``). Not mapped: ``num_batches_tracked`` (a batch-norm step
counter; DETR's batch norm is frozen) and a ``class_embed`` of more than two rows (COCO DETR's 92-way
classifier, which GPV-1 replaces by its binary objectness head; the reference skips it as a size
mismatch). The target names and shapes come from the model the config builds (on the meta device).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from lightning_gpv.errors import InputError
from lightning_gpv.models.gpv1.config import GPV1Config
from lightning_gpv.models.gpv1.detr import DetrRegionEncoder

DETR_PARTS = ("visual.detr.", "visual.box_head.")
"""``GPV1`` state-dict prefixes of the DETR proper (what a DETR checkpoint must fill)."""

BN_BUFFERS = "weight|bias|running_mean|running_var"
UNUSED_BN_COUNTER = "batch-norm step counter; DETR's batch norm is frozen and keeps no count"


class ConversionError(InputError):
    """A checkpoint that cannot be converted: unknown keys, missing targets or mismatched shapes."""


class Piece(NamedTuple):
    """Where (part of) a source tensor goes.

    Attributes:
        target: Target key.
        target_chunk: ``(index, count)``: the source fills chunk ``index`` of ``count`` equal chunks of
            the target along dim 0 (several sources fused into one target); None = the whole target.
        source_chunk: ``(index, count)``: only this chunk of the source along dim 0 is used (one fused
            source split into several targets); None = the whole source.
        transform: Applied to the source (after ``source_chunk``), e.g. a row permutation.
    """

    target: str
    target_chunk: tuple[int, int] | None = None
    source_chunk: tuple[int, int] | None = None
    transform: Callable[[Tensor], Tensor] | None = None


Rule = Callable[[str, Tensor], "list[Piece] | str | None"]
"""``(source key, tensor)`` -> pieces, or a reason (str) it is not used, or None when unknown."""


@dataclass
class ConversionReport:
    """What a conversion did.

    Attributes:
        source: The source layout (``"detr"`` or ``"gpv1"``).
        mapped: Source key -> the target keys it filled.
        unused: Source key -> why it is not used.
        missing: Target keys no source filled (only those ``allow_missing`` named; others raise).
        notes: Other facts about the conversion (e.g. reordered rows).
    """

    source: str
    mapped: dict[str, list[str]] = field(default_factory=dict)
    unused: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """Plain data (what ``conversion_report.json`` holds)."""
        return asdict(self)

    def __str__(self) -> str:
        targets = sum(len(t) for t in self.mapped.values())
        lines = [
            f"{self.source} conversion: {len(self.mapped)} source tensors -> {targets} target tensors; "
            f"{len(self.unused)} unused; {len(self.missing)} missing"
        ]
        lines += [f"  unused {key}: {reason}" for key, reason in self.unused.items()]
        lines += [f"  missing {key}" for key in self.missing]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def target_config(config: GPV1Config | None) -> GPV1Config:
    """``config`` (the paper's by default) with pretrained names cleared: the explicit sizes define the
    target, so that it can be built without downloads."""
    config = config or GPV1Config.paper()
    return replace(
        config,
        visual=replace(config.visual, name_or_path=None),
        text=replace(config.text, name_or_path=None, tokenizer_name_or_path=None),
    )


def detr_targets(config: GPV1Config) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """Names (``GPV1`` state-dict keys, ``visual.`` prefixed), shapes and dtypes of the visual module."""
    config = target_config(config)
    with torch.device("meta"):
        visual = DetrRegionEncoder(config.visual, config.hidden_size)
    return {f"visual.{k}": (v.shape, v.dtype) for k, v in visual.state_dict().items()}


def _chunk(tensor: Tensor, spec: tuple[int, int] | None) -> Tensor:
    if spec is None:
        return tensor
    index, count = spec
    size = tensor.shape[0] // count
    return tensor[index * size : (index + 1) * size]


def _shape(shape: Iterable[int]) -> tuple[int, ...]:
    return tuple(int(s) for s in shape)


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(key == p or fnmatch.fnmatchcase(key, p) for p in patterns)


def apply_rules(
    original: Mapping[str, Tensor],
    rule: Rule,
    targets: Mapping[str, tuple[torch.Size, torch.dtype]],
    required: Iterable[str],
    *,
    source: str,
    allow_missing: Iterable[str] = (),
    ignore_unknown: bool = False,
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Convert ``original`` with ``rule`` into tensors named and shaped as ``targets``.

    Args:
        original: The source state dict (prefixes such as ``module.`` already removed).
        rule: Maps each source key (see :data:`Rule`).
        targets: Every target key the rule may fill, with its shape and dtype.
        required: Target keys that must be filled.
        source: Layout name for the report.
        allow_missing: Required target keys (exact names or ``fnmatch`` patterns) that may stay unfilled.
        ignore_unknown: List source keys no rule knows as unused instead of raising.

    Raises:
        ConversionError: Unknown source keys (unless ``ignore_unknown``), a target filled twice, a
            shape mismatch (naming both keys and both shapes), or required targets left unfilled.
    """
    report = ConversionReport(source)
    filled: dict[str, Tensor] = {}
    chunks: dict[str, tuple[int, set[int]]] = {}  # fused targets: chunk count, chunks filled
    unknown: list[str] = []
    for key, tensor in original.items():
        outcome = rule(key, tensor)
        if outcome is None and ignore_unknown:
            outcome = "not a key of this layout (ignored on request)"
        if outcome is None:
            unknown.append(key)
        elif isinstance(outcome, str):
            report.unused[key] = outcome
        else:
            for piece in outcome:
                _fill(key, tensor, piece, targets, filled, chunks)
                report.mapped.setdefault(key, []).append(piece.target)
    if unknown:
        raise ConversionError(
            f"{len(unknown)} source keys are not part of the {source} layout: {_listing(unknown)} "
            "(a renamed key or another architecture; ignore_unknown lists them as unused)"
        )
    for target, (count, done) in chunks.items():
        if len(done) < count:
            del filled[target]  # partly filled: reported as missing
    missing = [t for t in required if t not in filled]
    refused = [t for t in missing if not _matches(t, allow_missing)]
    if refused:
        raise ConversionError(
            f"{len(refused)} target tensors are not filled by the {source} checkpoint: {_listing(refused)} "
            "(allow_missing accepts named ones)"
        )
    report.missing = missing
    return filled, report


def _fill(
    key: str,
    tensor: Tensor,
    piece: Piece,
    targets: Mapping[str, tuple[torch.Size, torch.dtype]],
    filled: dict[str, Tensor],
    chunks: dict[str, tuple[int, set[int]]],
) -> None:
    """Check the shape of one piece and write it into ``filled``."""
    if piece.target not in targets:
        raise ConversionError(f"{key} maps to {piece.target}, which the target model does not have")
    shape, dtype = targets[piece.target]
    expected = _shape(shape)
    if piece.target_chunk is not None:
        count = piece.target_chunk[1]
        expected = (expected[0] // count, *expected[1:]) if expected[0] % count == 0 else expected
    if piece.source_chunk is not None:
        index, count = piece.source_chunk
        if tensor.shape[0] % count:  # a fused source must split evenly
            raise ConversionError(
                f"shape mismatch: source {key} has shape {_shape(tensor.shape)}, targets {piece.target} "
                f"and the other {count - 1} chunks expect {(count * expected[0], *expected[1:])}"
            )
        key = f"{key} (rows of chunk {index} of {count})"
    value = _chunk(tensor.detach(), piece.source_chunk)
    if piece.transform is not None:
        value = piece.transform(value)
    if _shape(value.shape) != expected:
        raise ConversionError(
            f"shape mismatch: source {key} has shape {_shape(value.shape)}, target {piece.target} "
            f"expects {expected}"
        )
    value = value.to(dtype=dtype, device="cpu")
    if piece.target_chunk is None:
        if piece.target in filled:
            raise ConversionError(f"{piece.target} is filled twice (again by {key})")
        filled[piece.target] = value.clone().contiguous()
        return
    index, count = piece.target_chunk
    _, done = chunks.setdefault(piece.target, (count, set()))
    if index in done:
        raise ConversionError(f"{piece.target} chunk {index} of {count} is filled twice (again by {key})")
    done.add(index)
    buffer = filled.setdefault(piece.target, torch.empty(_shape(shape), dtype=dtype))
    _chunk(buffer, piece.target_chunk).copy_(value)


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


# ----------------------------------------------------------------------------------------------------
# DETR


def _to(target: str) -> list[Piece]:
    return [Piece(target)]


def _split_qkv(prefix: str, kind: str) -> list[Piece]:
    """A fused ``in_proj_{kind}`` (query, key, value stacked) into ``{prefix}.{q,k,v}_proj.{kind}``."""
    return [Piece(f"{prefix}.{p}_proj.{kind}", source_chunk=(i, 3)) for i, p in enumerate("qkv")]


_RESNET = "detr.backbone.model."
_ENCODER_NORMS = {"norm1": "self_attn_layer_norm", "norm2": "final_layer_norm"}
_DECODER_NORMS = {
    "norm1": "self_attn_layer_norm",
    "norm2": "encoder_attn_layer_norm",
    "norm3": "final_layer_norm",
}
_ATTENTIONS = {"self_attn": "self_attn", "multihead_attn": "encoder_attn"}
_FFN = {"linear1": "mlp.fc1", "linear2": "mlp.fc2"}


def _stage(m: re.Match[str]) -> str:
    """``layer{s}.{b}`` of torchvision -> ``encoder.stages.{s-1}.layers.{b}`` of transformers' ResNet."""
    return f"{_RESNET}encoder.stages.{int(m['stage']) - 1}.layers.{m['block']}"


_BLOCK = r"backbone\.0\.body\.layer(?P<stage>\d+)\.(?P<block>\d+)"
_LAYER = r"transformer\.(?P<stack>encoder|decoder)\.layers\.(?P<i>\d+)"

_DETR_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], list[Piece] | str | None]]] = [
    (re.compile(r".*\.num_batches_tracked"), lambda m: UNUSED_BN_COUNTER),
    (
        re.compile(r"backbone\.0\.body\.conv1\.weight"),
        lambda m: _to(f"{_RESNET}embedder.embedder.convolution.weight"),
    ),
    (
        re.compile(rf"backbone\.0\.body\.bn1\.(?P<p>{BN_BUFFERS})"),
        lambda m: _to(f"{_RESNET}embedder.embedder.normalization.{m['p']}"),
    ),
    (
        re.compile(rf"{_BLOCK}\.conv(?P<j>\d+)\.weight"),
        lambda m: _to(f"{_stage(m)}.layer.{int(m['j']) - 1}.convolution.weight"),
    ),
    (
        re.compile(rf"{_BLOCK}\.bn(?P<j>\d+)\.(?P<p>{BN_BUFFERS})"),
        lambda m: _to(f"{_stage(m)}.layer.{int(m['j']) - 1}.normalization.{m['p']}"),
    ),
    (
        re.compile(rf"{_BLOCK}\.downsample\.0\.weight"),
        lambda m: _to(f"{_stage(m)}.shortcut.convolution.weight"),
    ),
    (
        re.compile(rf"{_BLOCK}\.downsample\.1\.(?P<p>{BN_BUFFERS})"),
        lambda m: _to(f"{_stage(m)}.shortcut.normalization.{m['p']}"),
    ),
    (
        re.compile(rf"{_LAYER}\.(?P<attn>self_attn|multihead_attn)\.in_proj_(?P<p>weight|bias)"),
        lambda m: _split_qkv(f"detr.{m['stack']}.layers.{m['i']}.{_ATTENTIONS[m['attn']]}", m["p"]),
    ),
    (
        re.compile(rf"{_LAYER}\.(?P<attn>self_attn|multihead_attn)\.out_proj\.(?P<p>weight|bias)"),
        lambda m: _to(f"detr.{m['stack']}.layers.{m['i']}.{_ATTENTIONS[m['attn']]}.o_proj.{m['p']}"),
    ),
    (
        re.compile(rf"{_LAYER}\.(?P<ffn>linear1|linear2)\.(?P<p>weight|bias)"),
        lambda m: _to(f"detr.{m['stack']}.layers.{m['i']}.{_FFN[m['ffn']]}.{m['p']}"),
    ),
    (
        re.compile(rf"{_LAYER}\.(?P<norm>norm[123])\.(?P<p>weight|bias)"),
        lambda m: _layer_norm(m),
    ),
    (
        re.compile(r"transformer\.decoder\.norm\.(?P<p>weight|bias)"),
        lambda m: _to(f"detr.decoder.layernorm.{m['p']}"),
    ),
    (re.compile(r"query_embed\.weight"), lambda m: _to("detr.query_position_embeddings.weight")),
    (re.compile(r"input_proj\.(?P<p>weight|bias)"), lambda m: _to(f"detr.input_projection.{m['p']}")),
    (
        re.compile(r"bbox_embed\.layers\.(?P<k>\d+)\.(?P<p>weight|bias)"),
        lambda m: _to(f"box_head.layers.{m['k']}.{m['p']}"),
    ),
]


def _layer_norm(m: re.Match[str]) -> list[Piece] | None:
    norms = _ENCODER_NORMS if m["stack"] == "encoder" else _DECODER_NORMS
    if m["norm"] not in norms:  # norm3 of an encoder layer: not a DETR key
        return None
    return _to(f"detr.{m['stack']}.layers.{m['i']}.{norms[m['norm']]}.{m['p']}")


def detr_rule(
    prefix: str = "visual.", class_head: Literal["auto", "objectness"] = "auto"
) -> Callable[[str, Tensor], list[Piece] | str | None]:
    """The rule for original DETR keys, mapping to ``{prefix}`` + our visual-module names.

    Args:
        prefix: Prefix of the target keys (``"visual."``: names of the ``GPV1`` state dict).
        class_head: ``"objectness"``: ``class_embed`` always maps to the binary objectness head (a
            GPV-1 checkpoint; a shape mismatch raises); ``"auto"``: only when it has two rows (a DETR
            trained with one class), otherwise it is unused.
    """

    def rule(key: str, tensor: Tensor) -> list[Piece] | str | None:
        if key.startswith("class_embed.") and key.removeprefix("class_embed.") in ("weight", "bias"):
            rows = int(tensor.shape[0])
            if class_head == "objectness" or rows == 2:
                return _to(f"{prefix}objectness.{key.removeprefix('class_embed.')}")
            return (
                f"DETR's {rows}-way classifier ({rows - 1} classes + no object) is replaced by GPV-1's "
                "binary objectness head (the reference skips it as a size mismatch)"
            )
        for pattern, make in _DETR_RULES:
            m = pattern.fullmatch(key)
            if m is not None:
                outcome = make(m)
                if outcome is None or isinstance(outcome, str):
                    return outcome
                return [p._replace(target=prefix + p.target) for p in outcome]
        return None

    return rule


def strip_prefix(state: Mapping[str, Tensor], prefix: str = "module.") -> dict[str, Tensor]:
    """``state`` with ``prefix`` (DistributedDataParallel's ``module.``) removed when every key has it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k.removeprefix(prefix): v for k, v in state.items()}
    return dict(state)


def convert_detr_state_dict(
    original: Mapping[str, Tensor],
    config: GPV1Config | None = None,
    *,
    allow_missing: Iterable[str] = (),
    ignore_unknown: bool = False,
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Convert an original-layout DETR state dict into the DETR part of a ``GPV1`` state dict.

    The result holds ``visual.detr.*`` and ``visual.box_head.*`` (and ``visual.objectness.*`` when the
    checkpoint's class head has two rows); load it with ``GPV1.load_state_dict(state, strict=False)``.
    The rest of GPV-1 (region projection, text encoder, co-attention, heads, decoder) is not in a DETR
    checkpoint and is not reported as missing.

    Args:
        original: The checkpoint's ``model`` state dict (a ``module.`` prefix on every key is removed).
        config: The GPV-1 whose visual module is the target (default: the paper's, ResNet-50).
        allow_missing: Target keys (exact or ``fnmatch`` patterns) that may stay unfilled.
        ignore_unknown: Report unknown source keys as unused instead of raising.

    Returns:
        ``(state dict, report)``.

    Raises:
        ConversionError: See :func:`apply_rules`.
    """
    targets = detr_targets(target_config(config))
    required = [k for k in targets if k.startswith(DETR_PARTS)]
    return apply_rules(
        strip_prefix(original),
        detr_rule(),
        targets,
        required,
        source="detr",
        allow_missing=allow_missing,
        ignore_unknown=ignore_unknown,
    )
