"""Converting the released GPV-1 checkpoints (allenai/gpv-1) into :class:`GPV1`'s state dict, and the
``lightning-gpv convert`` command.

A released ``model.pth`` holds ``{"model": state_dict, "optimizer": ..., "epoch": ...}``, its keys
prefixed ``module.`` (DistributedDataParallel). The reference ``GPV`` module names its parts:

==============================================  ================================================
reference ``GPV``                               ``GPV1``
==============================================  ================================================
``detr.*`` (original DETR layout)               ``visual.*`` (see ``convert_detr``)
``detr.class_embed`` (2-way)                    ``visual.objectness``
``detr_joiner``                                 ``visual.region_proj``
``bert.model.*`` (transformers ``BertModel``)   ``query_encoder.bert.*``
``bert_joiner``                                 ``query_encoder.proj``
``co_att_transformer.{i}.*`` (ViLBERT)          ``coattention.layers.{i}.*`` (below)
``relevance_predictor``                         ``relatedness.proj``
``relevance_tokens``                            ``conditioning.tokens``
``text_decoder.layers.{i}.*``                   ``answer_decoder.decoder.layers.{i}.*`` (same names)
``answer_head.vocab_embed``                     ``answer_vectors`` (rows reordered, below)
``answer_head.classifier_transform``            ``answer_decoder.output_proj``
``answer_input_embedings.transform``            ``answer_decoder.input_proj``
==============================================  ================================================

Co-attention: the reference calls each ``BertConnectionLayer`` with stream 1 = the query tokens and
stream 2 = the regions. ``biattention.query1`` projects the text, and the text attends to the regions
through ``key2``/``value2``, then ``biOutput.dense1`` and ``LayerNorm1``; the regions attend to the text
with ``query2``, ``key1``, ``value1``, then ``dense2`` and ``LayerNorm2``. The feed-forward blocks named
``v_intermediate``/``v_output`` run on stream 1, i.e. on the text, and ``t_intermediate``/``t_output``
on the regions. Hence, per layer (``q, k, v`` fill the thirds of ``nn.MultiheadAttention``'s
``in_proj_weight``/``in_proj_bias``):

* ``text_from_regions``: ``q = query1``, ``k = key2``, ``v = value2``, ``out_proj = biOutput.dense1``,
  ``norm = biOutput.LayerNorm1``; ``text_ffn``: ``v_intermediate.dense``, ``v_output.dense``,
  ``v_output.LayerNorm``.
* ``regions_from_text``: ``q = query2``, ``k = key1``, ``v = value1``, ``out_proj = biOutput.dense2``,
  ``norm = biOutput.LayerNorm2``; ``region_ffn``: ``t_intermediate.dense``, ``t_output.dense``,
  ``t_output.LayerNorm``.

Answer vocabulary: the reference's ``vocab.json`` is the sorted words followed by ``__pad__``,
``__cls__``, ``__stop__``, ``__unk__``; ours puts these four first (ids 0-3). The rows of the vocabulary
table are reordered accordingly (from the word list when given, else by that layout). The words
themselves are not in the checkpoint: pass the reference ``vocab.json`` to write ours.

Not used (:data:`GPV1_UNUSED` gives the reasons): ``vision_token``, ``lang_token``, ``pos_enc``,
``biOutput.q_dense1``/``q_dense2``, the duplicate input table ``answer_input_embedings.embedding_layer``,
loss buffers under ``criterion.``, batch-norm counters and BERT's ``position_ids``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from lightning_gpv.errors import InputError
from lightning_gpv.models.gpv1.config import GPV1Config
from lightning_gpv.models.gpv1.convert_detr import (
    ConversionError,
    ConversionReport,
    Piece,
    apply_rules,
    convert_detr_state_dict,
    detr_rule,
    strip_prefix,
    target_config,
)
from lightning_gpv.models.gpv1.folder import FAMILY
from lightning_gpv.models.gpv1.model import GPV1
from lightning_gpv.models.gpv1.vocab import SPECIAL_TOKENS, AnswerVocabulary
from lightning_gpv.models.hub import shareable, torch_file_problem, write_folder_config

GPV1_UNUSED: dict[str, str] = {
    "vision_token": "indicator token created by the reference but never used in its forward pass",
    "lang_token": "indicator token created by the reference but never used in its forward pass",
    "pos_enc": "fixed sinusoidal table (not trained; off in the released config); GPV1's decoder computes "
    "the same table when decoder.position_encoding is on",
    "q_dense": "ViLBERT's BertBiOutput.q_dense1/q_dense2: created but never used in the forward pass",
    "embedding_layer": "the decoder's input table: a frozen copy of answer_head.vocab_embed; one buffer "
    "(answer_vectors) serves both in GPV1 (the two are checked to be equal)",
    "criterion": "buffer of the reference's loss module (e.g. the no-object class weight [1, eos_coef]); "
    "the loss settings live in the training recipe",
    "num_batches_tracked": "batch-norm step counter; DETR's batch norm is frozen and keeps no count",
    "position_ids": "BERT's constant position-index buffer (recomputed)",
    "relevance_tokens": "relevance conditioning is off in the target config",
}
"""Why each kind of reference tensor is not mapped (keyed by the name part that identifies it)."""

_WB = r"(?P<p>weight|bias)"
_RENAMES = {
    "detr_joiner": "visual.region_proj",
    "bert_joiner": "query_encoder.proj",
    "relevance_predictor": "relatedness.proj",
    "answer_head.classifier_transform": "answer_decoder.output_proj",
    "answer_input_embedings.transform": "answer_decoder.input_proj",
}
_COATT_QKV = {
    "query1": ("text_from_regions", 0),
    "key2": ("text_from_regions", 1),
    "value2": ("text_from_regions", 2),
    "query2": ("regions_from_text", 0),
    "key1": ("regions_from_text", 1),
    "value1": ("regions_from_text", 2),
}
_COATT_RENAMES = {
    "biOutput.dense1": "text_from_regions.attn.out_proj",
    "biOutput.LayerNorm1": "text_from_regions.norm",
    "biOutput.dense2": "regions_from_text.attn.out_proj",
    "biOutput.LayerNorm2": "regions_from_text.norm",
    "v_intermediate.dense": "text_ffn.fc1",
    "v_output.dense": "text_ffn.fc2",
    "v_output.LayerNorm": "text_ffn.norm",
    "t_intermediate.dense": "region_ffn.fc1",
    "t_output.dense": "region_ffn.fc2",
    "t_output.LayerNorm": "region_ffn.norm",
}
_RENAME = re.compile(rf"(?P<name>{'|'.join(re.escape(k) for k in _RENAMES)})\.{_WB}")
_COATT = re.compile(r"co_att_transformer\.(?P<i>\d+)\.(?P<rest>.+)")
_COATT_ATTN = re.compile(rf"biattention\.(?P<proj>(?:query|key|value)[12])\.{_WB}")
_COATT_RENAME = re.compile(rf"(?P<name>{'|'.join(re.escape(k) for k in _COATT_RENAMES)})\.{_WB}")
_BERT = re.compile(r"bert\.model\.(?P<rest>.+)")
_DECODER = re.compile(r"text_decoder\.layers\.(?P<rest>.+)")
_VOCAB_TABLE = "answer_head.vocab_embed"
_INPUT_TABLE = "answer_input_embedings.embedding_layer.weight"


class CheckpointError(InputError):
    """A file that is not a usable checkpoint (unreadable, not weights-only, or no state dict)."""


def answer_row_order(num_rows: int, words: Sequence[str] | None = None) -> list[int]:
    """Reference vocabulary rows in our order: the four special tokens first, then the other words.

    Args:
        num_rows: ``V``, the rows of the reference table.
        words: The reference ``vocab.json`` (its word list); None assumes its published layout (the
            specials are the last four rows, in our order ``__pad__, __cls__, __stop__, __unk__``).

    Raises:
        ConversionError: ``words`` does not match the table or lacks a special token.
    """
    if words is None:
        if num_rows < len(SPECIAL_TOKENS):
            raise ConversionError(f"a vocabulary table of {num_rows} rows cannot hold the special tokens")
        specials = list(range(num_rows - len(SPECIAL_TOKENS), num_rows))
        return specials + list(range(num_rows - len(SPECIAL_TOKENS)))
    if len(words) != num_rows:
        raise ConversionError(
            f"the vocabulary has {len(words)} words; the checkpoint's table {num_rows} rows"
        )
    if len(set(words)) != len(words):
        raise ConversionError("the vocabulary has duplicate words")
    absent = [w for w in SPECIAL_TOKENS if w not in words]
    if absent:
        raise ConversionError(f"the vocabulary lacks the special tokens {absent}")
    index = {w: i for i, w in enumerate(words)}
    return [index[w] for w in SPECIAL_TOKENS] + [i for i, w in enumerate(words) if w not in SPECIAL_TOKENS]


def gpv1_targets(config: GPV1Config) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """Names, shapes and dtypes of ``GPV1(config)``'s state dict (built on the meta device)."""
    with torch.device("meta"):
        model = GPV1(target_config(config))
    return {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}


def gpv1_rule(
    targets: Mapping[str, object], rows: Sequence[int]
) -> Callable[[str, Tensor], list[Piece] | str | None]:
    """The rule for reference ``GPV`` keys (``module.`` removed).

    Args:
        targets: The target keys (to know whether the target conditions on relevance).
        rows: Order of the vocabulary-table rows (:func:`answer_row_order`).
    """
    detr = detr_rule("visual.", class_head="objectness")
    order = torch.tensor(list(rows), dtype=torch.long)

    def rule(key: str, tensor: Tensor) -> list[Piece] | str | None:
        if key.startswith("detr."):
            return detr(key.removeprefix("detr."), tensor)
        if m := _RENAME.fullmatch(key):
            return [Piece(f"{_RENAMES[m['name']]}.{m['p']}")]
        if m := _BERT.fullmatch(key):
            rest = m["rest"]
            if rest == "embeddings.position_ids":
                return GPV1_UNUSED["position_ids"]
            return [Piece(f"query_encoder.bert.{rest}")]
        if m := _COATT.fullmatch(key):
            return _coattention(int(m["i"]), m["rest"])
        if m := _DECODER.fullmatch(key):
            return [Piece(f"answer_decoder.decoder.layers.{m['rest']}")]
        if key == "relevance_tokens":
            if "conditioning.tokens" not in targets:
                return GPV1_UNUSED["relevance_tokens"]
            return [Piece("conditioning.tokens")]
        if key == _VOCAB_TABLE:
            return [Piece("answer_vectors", transform=lambda t: t[order])]
        if key == _INPUT_TABLE:
            return GPV1_UNUSED["embedding_layer"]
        if key in ("vision_token", "lang_token", "pos_enc"):
            return GPV1_UNUSED[key]
        if key.startswith("criterion."):
            return GPV1_UNUSED["criterion"]
        if key.endswith(".num_batches_tracked"):
            return GPV1_UNUSED["num_batches_tracked"]
        return None

    return rule


def _coattention(layer: int, rest: str) -> list[Piece] | str | None:
    prefix = f"coattention.layers.{layer}."
    if m := _COATT_ATTN.fullmatch(rest):
        attn, third = _COATT_QKV[m["proj"]]
        return [Piece(f"{prefix}{attn}.attn.in_proj_{m['p']}", target_chunk=(third, 3))]
    if m := _COATT_RENAME.fullmatch(rest):
        return [Piece(f"{prefix}{_COATT_RENAMES[m['name']]}.{m['p']}")]
    if re.fullmatch(rf"biOutput\.q_dense[12]\.{_WB}", rest):
        return GPV1_UNUSED["q_dense"]
    return None


def with_checkpoint_vocab_size(config: GPV1Config, original: Mapping[str, Tensor]) -> GPV1Config:
    """``config`` with ``vocab_size`` set to the rows of the checkpoint's vocabulary table (if it has one):
    the answer vocabulary belongs to the released data, not to the architecture."""
    table = strip_prefix(original).get(_VOCAB_TABLE)
    return config if table is None else replace(config, vocab_size=int(table.shape[0]))


def convert_gpv1_state_dict(
    original: Mapping[str, Tensor],
    config: GPV1Config | None = None,
    *,
    vocab_words: Sequence[str] | None = None,
    allow_missing: Iterable[str] = (),
    ignore_unknown: bool = False,
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Convert a released GPV-1 state dict into ``GPV1``'s (every parameter and buffer).

    Args:
        original: The checkpoint's ``model`` state dict (a ``module.`` prefix on every key is removed).
        config: The target's sizes; None = the paper's with ``vocab_size`` read from the checkpoint.
            Pretrained names in it are ignored (the explicit sizes define the target).
        vocab_words: The reference ``vocab.json`` word list, to order the vocabulary rows by; None
            assumes the published layout (:func:`answer_row_order`).
        allow_missing: Target keys (exact or ``fnmatch`` patterns) that may stay unfilled.
        ignore_unknown: Report unknown source keys as unused instead of raising.

    Returns:
        ``(state dict, report)``; ``GPV1(config).load_state_dict(state)`` loads it strictly.

    Raises:
        ConversionError: Unknown keys, unfilled targets, a shape mismatch (naming the source key, the
            target key and both shapes), or two vocabulary tables that differ.
    """
    original = strip_prefix(original)
    table = original.get(_VOCAB_TABLE)
    config = config or with_checkpoint_vocab_size(GPV1Config.paper(), original)
    rows = answer_row_order(int(table.shape[0]) if table is not None else config.vocab_size, vocab_words)
    targets = gpv1_targets(config)
    state, report = apply_rules(
        original,
        gpv1_rule(targets, rows),
        targets,
        list(targets),
        source="gpv1",
        allow_missing=allow_missing,
        ignore_unknown=ignore_unknown,
    )
    duplicate = original.get(_INPUT_TABLE)
    if table is not None and duplicate is not None and not torch.equal(table, duplicate):
        raise ConversionError(
            f"{_INPUT_TABLE} differs from {_VOCAB_TABLE}; GPV1 keeps one vocabulary table for both"
        )
    if table is not None:
        how = "the given word list" if vocab_words is not None else "the published layout (specials last)"
        report.notes.append(
            f"{_VOCAB_TABLE} rows reordered by {how}: __pad__, __cls__, __stop__, __unk__ first (ids 0-3)"
        )
    report.notes.append(
        "the reference encodes queries with bert-base-uncased's tokenizer (text.tokenizer_name_or_path)"
    )
    return state, report


def load_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state dict of a checkpoint file, read without unpickling arbitrary objects.

    Reads ``.safetensors`` files or PyTorch files (``torch.load(weights_only=True)``); a top-level
    ``{"model": ...}`` or ``{"state_dict": ...}`` wrapping is removed.

    Raises:
        CheckpointError: The file is missing, unreadable, needs other Python objects unpickled, or holds
            no mapping of tensors. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    problem = None if path.suffix == ".safetensors" else torch_file_problem(path)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: object = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_first_line(err)})") from err
        raise CheckpointError(
            f"{path}: holds Python objects other than tensors and plain containers "
            f"({', '.join(_unsafe_globals(path) or [found[1]])}); refusing to unpickle them, as unpickling "
            "can run arbitrary code. Where the file is trusted, re-save its state dict alone "
            "(torch.save(torch.load(FILE, weights_only=False)['model'], 'weights.pth')) and convert that"
        ) from err
    except Exception as err:  # torch.load raises KeyError, EOFError, RuntimeError... on non-checkpoints
        kind = "safetensors file" if path.suffix == ".safetensors" else "PyTorch checkpoint"
        raise CheckpointError(f"{path}: not a {kind} ({_first_line(err)})") from err
    if isinstance(loaded, Mapping):
        for wrapper in ("model", "state_dict"):
            if isinstance(loaded.get(wrapper), Mapping):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise CheckpointError(f"{path}: holds no state dict (a mapping of names to tensors)")
    tensors = {k: v for k, v in loaded.items() if isinstance(v, Tensor)}
    if len(tensors) != len(loaded):
        others = [str(k) for k, v in loaded.items() if not isinstance(v, Tensor)][:5]
        raise CheckpointError(f"{path}: the state dict holds non-tensor entries ({', '.join(others)})")
    return tensors


def _unsafe_globals(path: Path) -> list[str]:
    """The classes and functions a pickle-based checkpoint names (read without unpickling)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # an old format or a damaged file: the load error names one of them
        return []


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def write_converted(
    out: str | Path,
    state: Mapping[str, Tensor],
    config: GPV1Config,
    report: ConversionReport,
    vocab: AnswerVocabulary | None = None,
    family: str = FAMILY,
) -> Path:
    """Write ``out/model.safetensors``, ``out/config.json`` (``{"family": ..., "config": ...}``, as
    ``save_pretrained`` writes it: ``GPV1.from_pretrained(out)`` reads a whole GPV-1; a DETR conversion is
    marked ``"gpv1-detr"``, the weights of GPV-1's DETR only) and ``out/conversion_report.json``, and
    ``out/answers`` (vocabulary and vectors) when ``vocab`` is given. The query tokenizer is not part of a
    released checkpoint: set ``text.tokenizer_name_or_path`` (BERT-base-uncased's) to predict with it.

    Returns:
        ``out``.
    """
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(dict(state), str(out / "model.safetensors"), metadata={"format": "pt", "source": report.source})
    shareable(out / "model.safetensors")
    # The saved-folder layout (lightning_gpv.models.hub), so that GPV1.from_pretrained(out) reads it.
    write_folder_config(out, family, config.to_dict())
    report_text = json.dumps(report.to_dict(), indent=2)
    (out / "conversion_report.json").write_text(report_text + "\n", encoding="utf-8")
    if vocab is not None:
        vocab.save(out / "answers", state["answer_vectors"], source=f"converted GPV-1 ({report.source})")
    return out


_EXAMPLES = """examples:
  lightning-gpv convert gpv1 --checkpoint gpv_all_original_split/ckpts/model.pth \\
      --vocab learning_phase_data/vocab/vocab.json --out gpv1_original_split
  lightning-gpv convert detr --checkpoint detr/detr_coco.pth --out detr_coco
  lightning-gpv convert gpv1 --help
exit status: 0 on success, 2 on a bad file (one line on stderr names it)"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-gpv convert",
        description="Convert published weights into GPV1's parameter names. Reads the checkpoint without "
        "unpickling arbitrary objects and writes OUT/model.safetensors, OUT/config.json (the GPV1Config) "
        "and OUT/conversion_report.json (what was mapped, what was not used and why, what is missing).",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sources = parser.add_subparsers(dest="source", required=True, metavar="{gpv1,detr}")
    gpv1 = sources.add_parser(
        "gpv1",
        help="a released GPV-1 model.pth (allenai/gpv-1): every GPV1 weight",
        description="Convert a released GPV-1 checkpoint (allenai/gpv-1 layout) into a full GPV1 state dict.",
    )
    detr = sources.add_parser(
        "detr",
        help="an original DETR checkpoint (facebookresearch/detr): GPV1's DETR part only",
        description="Convert an original DETR checkpoint (facebookresearch/detr layout) into the DETR part "
        "of GPV1 (visual.detr.*, visual.box_head.*; visual.objectness.* when its class head has 2 "
        "rows). Load the result with GPV1.load_state_dict(state, strict=False).",
    )
    for sub in (gpv1, detr):
        sub.add_argument("--checkpoint", required=True, help="the .pth/.pt (or .safetensors) file")
        sub.add_argument("--out", required=True, help="output folder (created)")
        sub.add_argument(
            "--config",
            choices=sorted(GPV1Config.presets()),
            default="paper",
            help="GPV1Config preset whose sizes the weights must have (default: paper)",
        )
        sub.add_argument(
            "--allow-missing",
            action="append",
            default=[],
            metavar="PATTERN",
            help="target key (or fnmatch pattern) that may stay unfilled; repeatable",
        )
        sub.add_argument(
            "--ignore-unknown",
            action="store_true",
            help="list source keys of no known layout as unused instead of failing",
        )
        sub.add_argument("--overwrite", action="store_true", help="replace files already in OUT")
    gpv1.add_argument(
        "--vocab",
        help="the reference vocab.json (its word list): orders the vocabulary rows by it and writes "
        "OUT/answers (the answer vocabulary folder a GPV1 model is built with)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``lightning-gpv convert {gpv1,detr} --checkpoint FILE --out DIR [--config paper|tiny]``.

    Returns:
        0 on success; 2 (with a one-line error naming the file) on bad input.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    out = Path(args.out)
    if (out / "model.safetensors").exists() and not args.overwrite:
        parser.exit(2, f"lightning-gpv convert: error: {out} already holds model.safetensors (--overwrite)\n")
    try:
        original = load_checkpoint(args.checkpoint)
        vocab = None
        if args.source == "detr":
            config = GPV1Config.from_name(args.config)
            state, report = convert_detr_state_dict(
                original, config, allow_missing=args.allow_missing, ignore_unknown=args.ignore_unknown
            )
        else:
            words = _read_words(args.vocab) if args.vocab else None
            config = with_checkpoint_vocab_size(GPV1Config.from_name(args.config), original)
            state, report = convert_gpv1_state_dict(
                original,
                config,
                vocab_words=words,
                allow_missing=args.allow_missing,
                ignore_unknown=args.ignore_unknown,
            )
            if words is not None:
                vocab = AnswerVocabulary([words[i] for i in answer_row_order(len(words), words)])
    except (CheckpointError, ConversionError) as err:
        named = str(err).startswith((str(args.checkpoint), str(getattr(args, "vocab", None))))
        message = str(err) if named else f"{args.checkpoint}: {err}"
        parser.exit(2, f"lightning-gpv convert: error: {' '.join(message.split())}\n")
    family = f"{FAMILY}-detr" if args.source == "detr" else FAMILY
    write_converted(out, state, config, report, vocab, family=family)
    print(report)
    print(f"wrote {out / 'model.safetensors'}, {out / 'config.json'}, {out / 'conversion_report.json'}")
    return 0


def _read_words(path: str) -> list[str]:
    """The word list of a reference ``vocab.json`` (a JSON list of strings)."""
    try:
        words = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable vocab.json ({_first_line(err)})") from err
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise CheckpointError(f"{path}: a vocab.json is a JSON list of words")
    return words
