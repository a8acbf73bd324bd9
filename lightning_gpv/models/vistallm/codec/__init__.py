"""VistaLLM's coordinate codec: boxes, points and masks as coordinate tokens in answer text, and back.

:class:`CoordinateCodec` is the API; one instance, built from the model config's ``num_bins`` and
``num_mask_points``, serves the tokenizer's added tokens, the instructions, the training targets and the
parsing of generated text. Coordinates are absolute pixels of the original image they belong to, each
quantized relative to that image's own width and height.

Submodules, one concept each: ``quantization`` (bins), ``vocabulary`` (tokens and the two styles),
``contours`` (mask contour points), ``parsing`` (reading groups, never raising) and ``answers`` (the
answer format of each task).
"""

from lightning_gpv.models.vistallm.codec.answers import (
    BOX_TASKS,
    MASK_TASKS,
    MULTI_MASK_TASKS,
    decode_generated,
)
from lightning_gpv.models.vistallm.codec.contours import spread_repeated_points
from lightning_gpv.models.vistallm.codec.coordinate_codec import (
    PAPER_NUM_BINS,
    PAPER_NUM_MASK_POINTS,
    CoordinateCodec,
)
from lightning_gpv.models.vistallm.codec.parsing import Kind, ParseResult
from lightning_gpv.models.vistallm.codec.vocabulary import (
    BOX_SEP,
    COORD_TOKEN_PREFIX,
    COORD_TOKEN_SUFFIX,
    MASK_SEP,
    Style,
)

__all__ = [
    "BOX_SEP",
    "BOX_TASKS",
    "COORD_TOKEN_PREFIX",
    "COORD_TOKEN_SUFFIX",
    "MASK_SEP",
    "MASK_TASKS",
    "MULTI_MASK_TASKS",
    "PAPER_NUM_BINS",
    "PAPER_NUM_MASK_POINTS",
    "CoordinateCodec",
    "Kind",
    "ParseResult",
    "Style",
    "decode_generated",
    "spread_repeated_points",
]
