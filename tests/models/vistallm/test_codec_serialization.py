"""CoordinateCodec: writing and reading boxes, points and masks as answers (human and token styles)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_gpv.models.vistallm.codec import (
    BOX_SEP,
    MASK_SEP,
    PAPER_NUM_BINS,
    PAPER_NUM_MASK_POINTS,
    CoordinateCodec,
    ParseResult,
    spread_repeated_points,
)

CODEC = CoordinateCodec(num_bins=PAPER_NUM_BINS, num_mask_points=PAPER_NUM_MASK_POINTS)
TEN_BINS = CoordinateCodec(num_bins=10, num_mask_points=PAPER_NUM_MASK_POINTS)
# The paper's codec; the tests call its methods by these short names.
format_boxes, format_points, format_masks = CODEC.format_boxes, CODEC.format_points, CODEC.format_masks
parse_boxes, parse_points, parse_masks = CODEC.parse_boxes, CODEC.parse_points, CODEC.parse_masks
parse_answer, format_group, coordinate_token = CODEC.parse_answer, CODEC.format_group, CODEC.coordinate_token

W, H = 640.0, 480.0
PARSERS = [parse_boxes, parse_points, parse_masks, parse_answer]


def assert_well_formed(result: ParseResult, width: float = W, height: float = H) -> None:
    """Arrays of the documented shapes and dtypes, finite, inside the image, boxes ordered."""
    assert isinstance(result, ParseResult)
    assert result.boxes.dtype == np.float32 and result.boxes.ndim == 2 and result.boxes.shape[1] == 4
    assert result.points.dtype == np.float32 and result.points.ndim == 2 and result.points.shape[1] == 2
    scale = np.array([width, height], dtype=np.float32)
    for xy in (result.boxes.reshape(-1, 2), result.points, *result.masks):
        assert np.all(np.isfinite(xy)) and np.all(xy >= 0) and np.all(xy <= scale)
    assert np.all(result.boxes[:, 0] <= result.boxes[:, 2])
    assert np.all(result.boxes[:, 1] <= result.boxes[:, 3])
    for mask in result.masks:
        assert mask.dtype == np.float32 and mask.ndim == 2 and mask.shape[1] == 2 and mask.shape[0] >= 3
    assert isinstance(result.text, str)
    assert isinstance(result.dropped, list) and all(isinstance(d, str) for d in result.dropped)


def assert_within_half_bin(parsed: np.ndarray, original: np.ndarray, width: float, height: float) -> None:
    err = np.abs(parsed.reshape(-1, 2) - np.asarray(original, np.float64).reshape(-1, 2))
    assert np.all(err[:, 0] <= width / 2000 + 1e-3)
    assert np.all(err[:, 1] <= height / 2000 + 1e-3)


# --------------------------------------------------------------------------------------------------
# Tokens and golden strings


def test_coordinate_tokens() -> None:
    tokens = CODEC.coordinate_tokens()
    assert len(tokens) == 1000 and len(set(tokens)) == 1000
    assert tokens[0] == "<c0>" and tokens[12] == "<c12>" and tokens[-1] == "<c999>"
    assert coordinate_token(7) == "<c7>"
    assert TEN_BINS.coordinate_tokens()[-1] == "<c9>"
    assert CODEC.added_tokens() == [*tokens, "<bsep>", "<msep>"]
    assert (BOX_SEP, MASK_SEP) == ("<bsep>", "<msep>")


def test_golden_boxes() -> None:
    boxes = np.array([[12.3, 34.9, 56.0, 78.5], [5.0, 6.0, 7.0, 8.0]])
    assert format_boxes(boxes[0], 1000, 1000) == "[12, 34, 56, 78]"
    assert format_boxes(boxes, 1000, 1000) == "[12, 34, 56, 78]<bsep>[5, 6, 7, 8]"
    assert format_boxes(boxes[:1], 1000, 1000, style="tokens") == "[<c12><c34><c56><c78>]"
    assert format_boxes(boxes, 1000, 1000, "tokens") == "[<c12><c34><c56><c78>]<bsep>[<c5><c6><c7><c8>]"
    assert format_boxes(np.array([[0, 0, 640, 480]]), W, H) == "[0, 0, 999, 999]"
    assert format_boxes(torch.tensor([[64.0, 48.0, 320.0, 240.0]]), W, H) == "[100, 100, 500, 500]"
    assert format_boxes(np.zeros((0, 4)), W, H) == ""


def test_golden_points_and_masks() -> None:
    assert format_points([[64.0, 240.0]], W, H) == "[100, 500]"
    assert format_points(np.array([1.0, 2.0]), 10, 10, "tokens") == "[<c100><c200>]"
    assert format_points([[1.0, 2.0], [3.0, 4.0]], 10, 10) == "[100, 200]<bsep>[300, 400]"
    square = np.array([[1.0, 1.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0]])
    assert format_masks([square], 10, 10) == "[100, 100, 200, 100, 200, 200, 100, 200]"
    assert (
        format_masks([square[:3], square[1:]], 10, 10, "tokens")
        == "[<c100><c100><c200><c100><c200><c200>]<msep>[<c200><c100><c200><c200><c100><c200>]"
    )
    assert format_masks([], W, H) == ""
    assert format_group([1, 2], "tokens") == "[<c1><c2>]"


def _distance_to_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance of each point to the closed polygon's outline."""
    start, end = polygon, np.roll(polygon, -1, axis=0)
    edge = end - start
    length2 = np.maximum((edge**2).sum(1), 1e-12)
    t = np.clip(((points[:, None] - start[None]) * edge[None]).sum(-1) / length2, 0, 1)
    nearest = start[None] + t[..., None] * edge[None]
    return np.linalg.norm(points[:, None] - nearest, axis=-1).min(1)


def test_spread_repeated_points_keeps_the_polygon_without_repeats() -> None:
    # A 32-point contour of a 10 x 6 bin rectangle: 28 points repeat their predecessor.
    square = np.array([[3, 4], [13, 4], [13, 10], [3, 10]])
    bins = np.repeat(square, [8, 8, 8, 8], axis=0)
    assert (bins[1:] == bins[:-1]).all(1).sum() == 28
    spread = spread_repeated_points(bins)
    assert spread.shape == (32, 2) and spread.dtype == np.int64
    assert not (spread == np.roll(spread, 1, axis=0)).all(1).any()  # no repeats, the closing edge too
    assert (spread[0] == bins[0]).all()
    assert _distance_to_polygon(spread.astype(float), square.astype(float)).max() <= 0.5 * 2**0.5
    for corner in square:  # every vertex of the polygon is still there, in order
        assert (spread == corner).all(1).any()
    order = [int(np.flatnonzero((spread == c).all(1))[0]) for c in square]
    assert order == sorted(order)


def test_spread_repeated_points_leaves_distinct_contours_and_tiny_ones() -> None:
    rng = np.random.default_rng(0)
    distinct = rng.integers(0, 1000, (32, 2))
    assert (spread_repeated_points(distinct) == distinct).all()
    dot = np.full((32, 2), 7)
    assert (spread_repeated_points(dot) == dot).all()
    # A run at the end that equals the first point joins it; a 2 x 2 bin contour has 8 steps for 12 points.
    ring = np.array([[0, 0], [1, 0], [2, 0], [2, 1], [2, 2], [1, 2], [0, 2], [0, 1]])
    bins = np.concatenate([ring.repeat(1, 0), np.zeros((4, 2), int)])
    spread = spread_repeated_points(bins)
    assert spread.shape == (12, 2) and (spread[:8] == ring).all() and (spread[8:] == ring[-1]).all()


def test_format_masks_spreads_repeats_unless_asked_not_to() -> None:
    square = np.array([[1.0, 1.0], [1.0, 1.0], [5.0, 1.0], [5.0, 5.0], [1.0, 5.0], [1.0, 5.0]])
    assert TEN_BINS.format_masks([square], 10, 10) == "[1, 1, 3, 1, 5, 1, 5, 3, 5, 5, 1, 5]"
    raw = TEN_BINS.format_masks([square], 10, 10, spread_repeats=False)
    assert raw == "[1, 1, 1, 1, 5, 1, 5, 5, 1, 5, 1, 5]"


def test_bad_inputs_to_writers_raise() -> None:
    with pytest.raises(ValueError):
        format_boxes(np.zeros((2, 3)), W, H)
    with pytest.raises(ValueError):
        format_points(np.zeros((2, 4)), W, H)
    with pytest.raises(ValueError):
        format_masks([np.zeros(6)], W, H)
    with pytest.raises(ValueError):
        format_group([1], "fancy")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        parse_boxes("[1, 2, 3, 4]", 0, H)


# --------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("style", ["human", "tokens"])
@pytest.mark.parametrize("count", [1, 3])
def test_round_trip_boxes_points_masks(style: str, count: int) -> None:
    rng = np.random.default_rng(count)
    width, height = 517.0, 333.0
    scale = np.array([width, height])
    corners = np.sort(rng.uniform(0, 1, (count, 2, 2)), axis=1) * scale  # (k, 2 corners, xy)
    boxes = corners.reshape(count, 4)
    result = parse_boxes(format_boxes(boxes, width, height, style), width, height)
    assert result.dropped == [] and result.boxes.shape == (count, 4)
    assert_within_half_bin(result.boxes, boxes, width, height)

    points = rng.uniform(0, 1, (count, 2)) * scale
    result = parse_points(format_points(points, width, height, style), width, height)
    assert result.dropped == [] and result.points.shape == (count, 2)
    assert_within_half_bin(result.points, points, width, height)

    polygons = [rng.uniform(0, 1, (32, 2)) * scale for _ in range(count)]
    text = format_masks(polygons, width, height, style)
    assert text.count(MASK_SEP) == count - 1
    result = parse_masks(text, width, height)
    assert result.dropped == [] and len(result.masks) == count
    for parsed, polygon in zip(result.masks, polygons, strict=True):
        assert parsed.shape == (32, 2)
        assert_within_half_bin(parsed, polygon, width, height)


def test_parse_answer_sorts_objects_by_length() -> None:
    mask = format_masks([np.full((32, 2), 5.0)], 10, 10)
    text = f"a dog [1, 2, 3, 4] at [5, 6] with {mask}"
    result = parse_answer(text, 1000, 1000)
    np.testing.assert_allclose(result.boxes, [[1.5, 2.5, 3.5, 4.5]])
    np.testing.assert_allclose(result.points, [[5.5, 6.5]])
    assert len(result.masks) == 1 and result.masks[0].shape == (32, 2)
    assert result.text == "a dog at with" and result.dropped == []


def test_spot_captioning_text_and_boxes() -> None:
    answer = "A man [<c10><c20><c30><c40>] rides a horse [50, 60, 70, 80]."
    result = parse_answer(answer, 1000, 1000)
    assert result.boxes.shape == (2, 4) and result.text == "A man rides a horse ."
    assert parse_boxes(answer, 1000, 1000).boxes.shape == (2, 4)


# --------------------------------------------------------------------------------------------------
# Tolerated variations and reported drops


@pytest.mark.parametrize(
    "text",
    [
        "[12, 34, 56, 78]",
        "[12,34,56,78]",
        "[12 34 56 78]",
        "[ 12 ,34,  56 , 78 ]",
        "[<c12><c34><c56><c78>]",
        "[<c12> <c34> <c56> <c78>]",
        "[<c12>, <c34>, <c56>, <c78>]",
        "[<c12>34<c56> 78]",
        "Answer: [012, 34, +56, 78].",
    ],
)
def test_both_styles_and_mixtures(text: str) -> None:
    result = parse_boxes(text, 1000, 1000)
    np.testing.assert_allclose(result.boxes, [[12.5, 34.5, 56.5, 78.5]])
    assert result.dropped == []


@pytest.mark.parametrize("text", ["", "   ", "[]", "[ ]", "There is no such object.", "None"])
def test_no_target_answers(text: str) -> None:
    for parser in PARSERS:
        result = parser(text, W, H)
        assert_well_formed(result)
        assert len(result.boxes) == len(result.points) == len(result.masks) == 0
        assert result.dropped == []


@pytest.mark.parametrize("style", ["human", "tokens"])
def test_truncated_generation_keeps_complete_groups(style: str) -> None:
    full = format_boxes(np.array([[10.0, 10.0, 20.0, 20.0], [30.0, 30.0, 40.0, 40.0]]), 100, 100, style)
    for cut in range(len(full)):
        result = parse_boxes(full[:cut], 100, 100)
        assert_well_formed(result, 100, 100)
        second = full.index(BOX_SEP)
        assert len(result.boxes) == (1 if cut > second - 1 else 0)
    result = parse_boxes(full[:-1], 100, 100)
    assert result.boxes.shape == (1, 4)
    assert result.dropped == ["group 2: truncated group at end (4 values), dropped"]
    mask = format_masks([np.full((32, 2), 50.0)] * 2, 100, 100, style)
    result = parse_masks(mask[: len(mask) * 3 // 4], 100, 100)
    assert len(result.masks) == 1 and "truncated group at end" in result.dropped[0]


def test_reversed_box_is_swapped_and_reported() -> None:
    result = parse_boxes("[50, 60, 10, 20]", 1000, 1000)
    np.testing.assert_allclose(result.boxes, [[10.5, 20.5, 50.5, 60.5]])
    assert result.dropped == ["group 1: x1 < x0, swapped", "group 1: y1 < y0, swapped"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[1, 2, 3]", "group 1: 3 values, expected 4"),
        ("[1, 2, 3, 4]<bsep>[1, 2, 3, 4, 5]", "group 2: 5 values, expected 4"),
        ("[1234, 1, 2, 3]", "group 1: value 1234 out of range 0..999"),
        ("[<c1000><c1><c2><c3>]", "group 1: value 1000 out of range 0..999"),
        ("[-1, 2, 3, 4]", "group 1: negative value -1"),
        ("[1.5, 2, 3, 4]", "group 1: non-integer value 1.5"),
        ("[1, [2, 3, 4]", "group 1: unclosed bracket, dropped"),
        ("[1x, 2, 3, 4]", "bracket '1x, 2, 3, 4' mixes text and numbers, kept as text"),
        ("<c1><c2> [1, 2, 3, 4]", "2 coordinate token(s) outside brackets ignored"),
        ("[" + "9" * 5000 + ", 1, 2, 3]", "group 1: value 99999999999999999999... out of range 0..999"),
    ],
)
def test_drops_are_reported(text: str, reason: str) -> None:
    result = parse_boxes(text, W, H)
    assert reason in result.dropped
    assert_well_formed(result)


def test_mask_point_counts() -> None:
    twenty = "[" + ", ".join(["10"] * 40) + "]"
    result = parse_masks(twenty, W, H)
    assert len(result.masks) == 1 and result.masks[0].shape == (20, 2)
    assert result.dropped == ["group 1: 20 points, expected 32 (kept)"]
    assert dataclasses.replace(CODEC, num_mask_points=20).parse_masks(twenty, W, H).dropped == []
    result = parse_masks("[1, 2, 3, 4]<msep>[1, 2, 3, 4, 5, 6, 7]", W, H)
    assert result.masks == []
    assert result.dropped == ["group 1: 2 points, need at least 3", "group 2: odd number of values (7)"]


def test_non_text_input_never_raises() -> None:
    for parser in PARSERS:
        for bad in (None, 123, b"[1, 2, 3, 4]", ["[1, 2, 3, 4]"]):
            result = parser(bad, W, H)  # type: ignore[arg-type]
            assert_well_formed(result)
            assert len(result.dropped) == 1


# --------------------------------------------------------------------------------------------------
# Property tests

_PIECES = [
    "[", "]", "[[", "]]", ",", ", ", " ", "\n", "<", ">", "<c", "c>", BOX_SEP, MASK_SEP, "<image>",
    "-", "+", ".", "e", "1e9", "NaN", "inf", "None", "null", "é", "中文", "\x00", "\u2028", "٣", "²",
    "<c0>", "<c999>", "<c1000>", "<c-1>", "<c 5>", "<c12", "[]", "0", "00", "999", "1000",
]  # fmt: skip
_piece = st.one_of(
    st.sampled_from(_PIECES),
    st.integers(min_value=0, max_value=999).map(coordinate_token),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats().map(str),
    st.text(max_size=4),
)
_mixtures = st.lists(_piece, max_size=120).map("".join)
_sizes = st.floats(min_value=1.0, max_value=1e5)


@settings(max_examples=200, deadline=None)
@given(text=st.text(), width=_sizes, height=_sizes)
def test_parsers_never_raise_on_random_text(text: str, width: float, height: float) -> None:
    for parser in PARSERS:
        assert_well_formed(parser(text, width, height), width, height)


@settings(max_examples=300, deadline=None)
@given(text=_mixtures, width=_sizes, height=_sizes)
def test_parsers_never_raise_on_token_mixtures(text: str, width: float, height: float) -> None:
    for parser in PARSERS:
        assert_well_formed(parser(text, width, height), width, height)


@settings(max_examples=100, deadline=None)
@given(
    width=_sizes,
    height=_sizes,
    corners=st.lists(st.tuples(*[st.floats(min_value=0.0, max_value=1.0)] * 4), min_size=0, max_size=5),
    style=st.sampled_from(["human", "tokens"]),
)
def test_random_boxes_round_trip(
    width: float, height: float, corners: list[tuple[float, ...]], style: str
) -> None:
    c = np.array(corners, dtype=np.float64).reshape(-1, 2, 2)
    boxes = (np.sort(c, axis=1) * [width, height]).reshape(-1, 4)
    result = parse_boxes(format_boxes(boxes, width, height, style), width, height)  # type: ignore[arg-type]
    assert result.dropped == [] and result.boxes.shape == boxes.shape
    err = np.abs(result.boxes.astype(np.float64) - boxes).reshape(-1, 2)
    tol = 1e-6 * max(width, height)
    assert np.all(err[:, 0] <= width / 2000 + tol) and np.all(err[:, 1] <= height / 2000 + tol)


# --------------------------------------------------------------------------------------------------
# A real Metaspace tokenizer


def _metaspace_tokenizer(prepend_scheme: str):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "▁": 1, "[": 2, "▁[": 3, "]": 4, "▁]": 5, "▁a": 6, "▁dog": 7}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    fast.add_tokens(CODEC.added_tokens(), special_tokens=True)
    return fast


def test_token_form_encodes_one_token_per_bin() -> None:
    tokenizer = _metaspace_tokenizer("first")
    coord_ids = set(tokenizer.convert_tokens_to_ids(CODEC.coordinate_tokens()))
    text = format_boxes(np.array([12.3, 34.9, 56.0, 78.5]), 1000, 1000, "tokens")
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces == ["▁[", "<c12>", "<c34>", "<c56>", "<c78>", "]"]
    assert sum(i in coord_ids for i in ids) == 4 and tokenizer.unk_token_id not in ids
    decoded = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert decoded == text

    # The pitfall the format avoids: spaces between added tokens become '▁' tokens.
    spaced = tokenizer.encode("[<c12> <c34> <c56> <c78>]", add_special_tokens=False)
    assert len(spaced) == len(ids) + 3

    boxes = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    several = "a dog " + format_boxes(boxes, 1000, 1000, "tokens")
    ids = tokenizer.encode(several, add_special_tokens=False)
    assert "▁" not in tokenizer.convert_ids_to_tokens(ids) and sum(i in coord_ids for i in ids) == 8
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, clean_up_tokenization_spaces=False) == several

    mask = format_masks([np.full((32, 2), 500.0)], 1000, 1000, "tokens")
    ids = tokenizer.encode(mask, add_special_tokens=False)
    assert len(ids) == 64 + 2 and sum(i in coord_ids for i in ids) == 64


def test_legacy_metaspace_decoding_still_parses() -> None:
    # Llama-style 'always' prepends '▁' after every added token, so "]" decodes as " ]".
    tokenizer = _metaspace_tokenizer("always")
    text = format_boxes(np.array([[12.0, 34.0, 56.0, 78.0], [1.0, 2.0, 3.0, 4.0]]), 1000, 1000, "tokens")
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert "▁" not in tokenizer.convert_ids_to_tokens(ids)
    decoded = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    np.testing.assert_array_equal(parse_boxes(decoded, 1000, 1000).boxes, parse_boxes(text, 1000, 1000).boxes)
