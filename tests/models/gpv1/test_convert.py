"""Converters of published GPV-1 and DETR weights, on random state dicts in the original key layouts.

The original names and shapes are written out here from the reference code's module structure (torchvision
ResNet under ``backbone.0.body``, DETR's post-norm transformer, ViLBERT's ``BertConnectionLayer``, the
``GPV`` module's attributes), independently of the converters' rules.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from lightning_gpv.cli import main as cli_main
from lightning_gpv.models.gpv1 import GPV1, GPV1Config
from lightning_gpv.models.gpv1.convert import (
    CheckpointError,
    ConversionError,
    convert_detr_state_dict,
    convert_gpv1_state_dict,
    load_checkpoint,
)
from lightning_gpv.models.gpv1.detr import DetrRegionEncoder
from lightning_gpv.models.gpv1.vocab import CLS_ID, STOP_ID, AnswerVocabulary

Shapes = dict[str, tuple[int, ...]]

GPV1_UNUSED = {
    "vision_token",
    "lang_token",
    "pos_enc",
    "answer_input_embedings.embedding_layer.weight",
    "criterion.localization_criterion.set_criterion.empty_weight",
}
"""Reference tensors a GPV-1 conversion leaves out (besides ``q_dense1/2`` of every co-attention layer)."""


# ----------------------------------------------------------------------------------------------------
# Original layouts


def _frozen_bn(prefix: str, channels: int) -> Shapes:
    return {f"{prefix}.{p}": (channels,) for p in ("weight", "bias", "running_mean", "running_var")}


def _linear(prefix: str, out_dim: int, in_dim: int) -> Shapes:
    return {f"{prefix}.weight": (out_dim, in_dim), f"{prefix}.bias": (out_dim,)}


def _layer_norm(prefix: str, dim: int) -> Shapes:
    return {f"{prefix}.weight": (dim,), f"{prefix}.bias": (dim,)}


def _torch_mha(prefix: str, dim: int) -> Shapes:
    """``nn.MultiheadAttention`` of equal q/k/v widths: one fused input projection."""
    return {
        f"{prefix}.in_proj_weight": (3 * dim, dim),
        f"{prefix}.in_proj_bias": (3 * dim,),
        **_linear(f"{prefix}.out_proj", dim, dim),
    }


def torchvision_resnet_shapes(config: GPV1Config, prefix: str = "backbone.0.body") -> Shapes:
    """torchvision ResNet (``BasicBlock``/``Bottleneck``, stride on the 3x3 convolution) up to layer4,
    widths from the config: stage ``s`` outputs ``hidden_sizes[s]`` channels (a bottleneck's inner width is
    a quarter of it)."""
    v = config.visual
    stem = v.backbone_embedding_size
    shapes = {f"{prefix}.conv1.weight": (stem, 3, 7, 7), **_frozen_bn(f"{prefix}.bn1", stem)}
    in_ch = stem
    for s, (depth, out_ch) in enumerate(zip(v.backbone_depths, v.backbone_hidden_sizes)):
        for b in range(depth):
            block = f"{prefix}.layer{s + 1}.{b}"
            if v.backbone_layer_type == "bottleneck":
                width = out_ch // 4
                convs = [(width, in_ch, 1), (width, width, 3), (out_ch, width, 1)]
            else:
                convs = [(out_ch, in_ch, 3), (out_ch, out_ch, 3)]
            for j, (o, i, k) in enumerate(convs, start=1):
                shapes[f"{block}.conv{j}.weight"] = (o, i, k, k)
                shapes.update(_frozen_bn(f"{block}.bn{j}", o))
            if b == 0 and (in_ch != out_ch or s > 0):
                shapes[f"{block}.downsample.0.weight"] = (out_ch, in_ch, 1, 1)
                shapes.update(_frozen_bn(f"{block}.downsample.1", out_ch))
            in_ch = out_ch
    return shapes


def detr_shapes(config: GPV1Config, num_classes: int = 91, prefix: str = "") -> Shapes:
    """facebookresearch/detr's ``DETR`` (post-norm: no encoder norm, a decoder norm)."""
    v = config.visual
    d = v.d_model
    shapes = torchvision_resnet_shapes(config, f"{prefix}backbone.0.body")
    for i in range(v.encoder_layers):
        layer = f"{prefix}transformer.encoder.layers.{i}"
        shapes.update(_torch_mha(f"{layer}.self_attn", d))
        shapes.update(_linear(f"{layer}.linear1", v.ffn_dim, d) | _linear(f"{layer}.linear2", d, v.ffn_dim))
        shapes.update(_layer_norm(f"{layer}.norm1", d) | _layer_norm(f"{layer}.norm2", d))
    for i in range(v.decoder_layers):
        layer = f"{prefix}transformer.decoder.layers.{i}"
        shapes.update(_torch_mha(f"{layer}.self_attn", d) | _torch_mha(f"{layer}.multihead_attn", d))
        shapes.update(_linear(f"{layer}.linear1", v.ffn_dim, d) | _linear(f"{layer}.linear2", d, v.ffn_dim))
        for n in (1, 2, 3):
            shapes.update(_layer_norm(f"{layer}.norm{n}", d))
    shapes.update(_layer_norm(f"{prefix}transformer.decoder.norm", d))
    shapes.update(_linear(f"{prefix}class_embed", num_classes + 1, d))
    for k, out_dim in enumerate((d, d, 4)):
        shapes.update(_linear(f"{prefix}bbox_embed.layers.{k}", out_dim, d))
    shapes[f"{prefix}query_embed.weight"] = (v.num_queries, d)
    shapes[f"{prefix}input_proj.weight"] = (d, v.backbone_hidden_sizes[-1], 1, 1)
    shapes[f"{prefix}input_proj.bias"] = (d,)
    return shapes


def bert_shapes(config: GPV1Config, prefix: str) -> Shapes:
    """transformers' ``BertModel`` (with pooler)."""
    t = config.text
    h = t.hidden_size
    shapes = {
        f"{prefix}.embeddings.word_embeddings.weight": (t.vocab_size, h),
        f"{prefix}.embeddings.position_embeddings.weight": (t.max_position_embeddings, h),
        f"{prefix}.embeddings.token_type_embeddings.weight": (2, h),
        **_layer_norm(f"{prefix}.embeddings.LayerNorm", h),
        **_linear(f"{prefix}.pooler.dense", h, h),
    }
    for i in range(t.num_layers):
        layer = f"{prefix}.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            shapes.update(_linear(f"{layer}.attention.self.{name}", h, h))
        shapes.update(_linear(f"{layer}.attention.output.dense", h, h))
        shapes.update(_layer_norm(f"{layer}.attention.output.LayerNorm", h))
        shapes.update(_linear(f"{layer}.intermediate.dense", t.intermediate_size, h))
        shapes.update(_linear(f"{layer}.output.dense", h, t.intermediate_size))
        shapes.update(_layer_norm(f"{layer}.output.LayerNorm", h))
    return shapes


def gpv1_shapes(config: GPV1Config) -> Shapes:
    """The reference ``GPV`` module (exp/gpv/models/gpv.py) with ``roi_head: True``, keys prefixed
    ``module.`` as in the released checkpoints."""
    h, w, v = config.hidden_size, config.text.hidden_size, config.visual
    shapes = detr_shapes(config, num_classes=1, prefix="detr.")
    shapes.update(_linear("detr_joiner", h, v.backbone_hidden_sizes[-1] + v.d_model))
    shapes.update(bert_shapes(config, "bert.model"))
    shapes.update(_linear("bert_joiner", h, w))
    ffn = config.coattention.ffn_dim
    for i in range(config.coattention.num_layers):
        layer = f"co_att_transformer.{i}"
        for name in ("query1", "key1", "value1", "query2", "key2", "value2"):
            shapes.update(_linear(f"{layer}.biattention.{name}", h, h))
        for n in (1, 2):
            shapes.update(_linear(f"{layer}.biOutput.dense{n}", h, h))
            shapes.update(_layer_norm(f"{layer}.biOutput.LayerNorm{n}", h))
            shapes.update(_linear(f"{layer}.biOutput.q_dense{n}", h, h))
        for stream in ("v", "t"):
            shapes.update(_linear(f"{layer}.{stream}_intermediate.dense", ffn, h))
            shapes.update(_linear(f"{layer}.{stream}_output.dense", h, ffn))
            shapes.update(_layer_norm(f"{layer}.{stream}_output.LayerNorm", h))
    shapes.update(_linear("relevance_predictor", 2, h))
    for i in range(config.decoder.num_layers):
        layer = f"text_decoder.layers.{i}"
        shapes.update(_torch_mha(f"{layer}.self_attn", h) | _torch_mha(f"{layer}.multihead_attn", h))
        ffn = config.decoder.ffn_dim
        shapes.update(_linear(f"{layer}.linear1", ffn, h) | _linear(f"{layer}.linear2", h, ffn))
        for n in (1, 2, 3):
            shapes.update(_layer_norm(f"{layer}.norm{n}", h))
    shapes["answer_head.vocab_embed"] = (config.vocab_size, w)
    shapes.update(_linear("answer_head.classifier_transform", h, w))
    shapes.update(_linear("answer_input_embedings.transform", h, w))
    shapes["answer_input_embedings.embedding_layer.weight"] = (config.vocab_size, w)
    shapes.update({"vision_token": (h,), "lang_token": (h,), "relevance_tokens": (2, h)})
    shapes["pos_enc"] = (1, 30, h)
    shapes["criterion.localization_criterion.set_criterion.empty_weight"] = (2,)
    return {f"module.{k}": s for k, s in shapes.items()}


def test_reference_layouts_have_the_documented_parameter_counts() -> None:
    """The paper-size layouts above against the reference's parameter counts (frozen batch norm and the
    loss module's buffer are not parameters): 41,501,638 for DETR, 224,257,992 + 2 x 768 x V in all."""

    def params(shapes: Shapes) -> int:
        buffers = ("running_mean", "running_var", "empty_weight")
        frozen_bn = re.compile(r".*(\.bn\d|downsample\.1)\.(weight|bias)")
        return sum(
            math.prod(s) for k, s in shapes.items() if not k.endswith(buffers) and not frozen_bn.fullmatch(k)
        )

    config = GPV1Config.paper(vocab_size=7601)
    detr = {k: s for k, s in gpv1_shapes(config).items() if k.startswith("module.detr.")}
    assert params(detr) == params(detr_shapes(config, num_classes=1)) == 41_501_638
    assert params(gpv1_shapes(config)) == 224_257_992 + 2 * 768 * 7601


def random_state(shapes: Shapes, seed: int = 0) -> dict[str, Tensor]:
    """Random tensors of these shapes (positive running variances; the two GPV-1 vocabulary tables equal)."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=gen) * 0.2 for k, s in shapes.items()}
    for key in state:
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 0.5
    table = "module.answer_head.vocab_embed"
    if table in state:
        state["module.answer_input_embedings.embedding_layer.weight"] = state[table].clone()
    return state


def _tiny(**overrides: object) -> GPV1Config:
    return GPV1Config.tiny(**overrides)


# ----------------------------------------------------------------------------------------------------
# DETR


def test_detr_conversion_fills_the_whole_detr_part() -> None:
    config = _tiny()
    original = random_state(detr_shapes(config, num_classes=91))
    state, report = convert_detr_state_dict(original, config)
    assert report.unused.keys() == {"class_embed.weight", "class_embed.bias"}
    assert "92-way" in report.unused["class_embed.weight"] and report.missing == []
    assert set(report.mapped) | set(report.unused) == set(original)
    with torch.device("meta"):
        visual = DetrRegionEncoder(config.visual, config.hidden_size)
    detr_keys = {f"visual.{k}" for k in visual.state_dict() if k.startswith(("detr.", "box_head."))}
    assert set(state) == detr_keys
    # the fused projection is split in query, key, value order
    fused = original["transformer.decoder.layers.1.multihead_attn.in_proj_weight"]
    for i, name in enumerate("qkv"):
        got = state[f"visual.detr.decoder.layers.1.encoder_attn.{name}_proj.weight"]
        torch.testing.assert_close(got, fused[32 * i : 32 * (i + 1)], rtol=0, atol=0)
    model = GPV1(config)
    result = model.load_state_dict(state, strict=False)
    assert result.unexpected_keys == [] and all(
        not k.startswith(("visual.detr", "visual.box")) for k in result.missing_keys
    )


def test_detr_with_one_class_fills_objectness_and_counters_are_unused() -> None:
    config = _tiny()
    original = random_state(detr_shapes(config, num_classes=1))
    original["backbone.0.body.bn1.num_batches_tracked"] = torch.tensor(5)
    wrapped = {f"module.{k}": v for k, v in original.items()}
    state, report = convert_detr_state_dict(wrapped, config)
    torch.testing.assert_close(state["visual.objectness.weight"], original["class_embed.weight"])
    assert list(report.unused) == ["backbone.0.body.bn1.num_batches_tracked"]


def test_detr_transformer_computes_what_the_original_does() -> None:
    """The converted visual module against DETR's post-norm transformer written out from its definition."""
    torch.manual_seed(0)
    config = _tiny()
    v = config.visual
    original = random_state(detr_shapes(config, num_classes=1), seed=3)
    state, _ = convert_detr_state_dict(original, config)
    visual = DetrRegionEncoder(config.visual, config.hidden_size).eval()
    visual.load_state_dict({k.removeprefix("visual."): t for k, t in state.items()}, strict=False)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = visual(images)
        fmap, mask = visual.detr.backbone(images, torch.ones(2, 64, 64))[-1]
        pos = visual.detr.position_embedding(
            shape=fmap.shape, device=fmap.device, dtype=fmap.dtype, mask=mask
        )
    pos = pos.flatten(2).permute(2, 0, 1)  # (HW, B, d): sequence first, as DETR
    o = original

    def attn(prefix: str, q: Tensor, k: Tensor, val: Tensor) -> Tensor:
        mha = nn.MultiheadAttention(v.d_model, v.num_heads)
        mha.load_state_dict({n: o[f"{prefix}.{n}"] for n in mha.state_dict()})
        return mha(q, k, val, need_weights=False)[0]

    def lin(prefix: str, x: Tensor) -> Tensor:
        return F.linear(x, o[f"{prefix}.weight"], o[f"{prefix}.bias"])

    def norm(prefix: str, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], o[f"{prefix}.weight"], o[f"{prefix}.bias"])

    with torch.no_grad():
        src = F.conv2d(fmap, o["input_proj.weight"], o["input_proj.bias"]).flatten(2).permute(2, 0, 1)
        for i in range(v.encoder_layers):
            p = f"transformer.encoder.layers.{i}"
            src = norm(f"{p}.norm1", src + attn(f"{p}.self_attn", src + pos, src + pos, src))
            src = norm(f"{p}.norm2", src + lin(f"{p}.linear2", F.relu(lin(f"{p}.linear1", src))))
        query_pos = o["query_embed.weight"][:, None].expand(-1, 2, -1)
        tgt = torch.zeros_like(query_pos)
        for i in range(v.decoder_layers):
            p = f"transformer.decoder.layers.{i}"
            tgt = norm(f"{p}.norm1", tgt + attn(f"{p}.self_attn", tgt + query_pos, tgt + query_pos, tgt))
            tgt = norm(f"{p}.norm2", tgt + attn(f"{p}.multihead_attn", tgt + query_pos, src + pos, src))
            tgt = norm(f"{p}.norm3", tgt + lin(f"{p}.linear2", F.relu(lin(f"{p}.linear1", tgt))))
        hs = norm("transformer.decoder.norm", tgt).transpose(0, 1)
        x = hs
        for k in range(3):
            x = lin(f"bbox_embed.layers.{k}", x)
            x = F.relu(x) if k < 2 else x
    torch.testing.assert_close(out.detr_features, hs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.boxes, x.sigmoid(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.objectness_logits, lin("class_embed", hs), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_resnet50_backbone_computes_what_torchvision_does() -> None:
    """The paper's backbone: a torchvision ResNet-50 (frozen batch norm) state dict, converted, gives the
    same C5 map (names straight from torchvision, which the original DETR wraps)."""
    from torchvision.models import resnet50
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    resnet = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    for name, buf in resnet.named_buffers():
        buf.copy_(torch.rand_like(buf) + 0.5 if name.endswith("running_var") else torch.randn_like(buf) * 0.1)
    body = IntermediateLayerGetter(resnet, return_layers={"layer4": "0"}).eval()
    original = {f"backbone.0.body.{k}": t for k, t in body.state_dict().items()}
    config = GPV1Config.paper()
    assert set(original) == set(torchvision_resnet_shapes(config))
    state, report = convert_detr_state_dict(
        original, config, allow_missing=["visual.detr.[!b]*", "visual.box_head.*"]
    )
    assert not report.unused and all(not k.startswith("visual.detr.backbone") for k in report.missing)
    visual = DetrRegionEncoder(config.visual, config.hidden_size).eval()
    visual.load_state_dict({k.removeprefix("visual."): t for k, t in state.items()}, strict=False)
    images = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        ours = visual.detr.backbone(images, torch.ones(1, 96, 64))[-1][0]
        theirs = body(images)["0"]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------
# GPV-1


def test_gpv1_conversion_covers_every_key_and_runs() -> None:
    config = _tiny()
    original = random_state(gpv1_shapes(config))
    state, report = convert_gpv1_state_dict(original, config)
    q_dense = {f"co_att_transformer.0.biOutput.q_dense{n}.{p}" for n in (1, 2) for p in ("weight", "bias")}
    assert set(report.unused) == GPV1_UNUSED | q_dense
    assert all(report.unused.values()) and report.missing == []
    assert {f"module.{k}" for k in set(report.mapped) | set(report.unused)} == set(original)
    model = GPV1(config)
    model.load_state_dict(state, strict=True)
    model.eval()
    # the specials (last four reference rows) come first
    table = original["module.answer_head.vocab_embed"]
    torch.testing.assert_close(model.answer_vectors[:4], table[-4:])
    torch.testing.assert_close(model.answer_vectors[4:], table[:-4])
    torch.testing.assert_close(model.relatedness.proj.weight, original["module.relevance_predictor.weight"])
    torch.manual_seed(0)
    answers = torch.tensor([[CLS_ID, 5, 6, STOP_ID], [CLS_ID, 7, STOP_ID, 0]])
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64), torch.randint(5, 100, (2, 6)), torch.ones(2, 6), answers)
    assert out.answer_logits.shape == (2, 4, config.vocab_size) and out.answer_logits.isfinite().all()
    assert out.boxes.shape == (2, config.visual.num_queries, 4)
    assert "reordered" in str(report)


def test_coattention_computes_what_vilbert_does() -> None:
    """One converted co-attention layer against ViLBERT's connection layer written out from its definition
    (stream 1 = the query tokens, stream 2 = the regions, no masks)."""
    config = _tiny()
    original = random_state(gpv1_shapes(config), seed=1)
    state, _ = convert_gpv1_state_dict(original, config)
    model = GPV1(config).eval()
    model.load_state_dict(state)
    o = {k.removeprefix("module.co_att_transformer.0."): t for k, t in original.items()}
    heads = config.coattention.num_heads

    def lin(name: str, x: Tensor) -> Tensor:
        return F.linear(x, o[f"{name}.weight"], o[f"{name}.bias"])

    def norm(name: str, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], o[f"{name}.weight"], o[f"{name}.bias"], eps=1e-12)

    def attend(q: Tensor, k: Tensor, val: Tensor) -> Tensor:
        b, n, d = q.shape
        split = [t.reshape(b, -1, heads, d // heads).transpose(1, 2) for t in (q, k, val)]
        scores = split[0] @ split[1].transpose(-1, -2) / math.sqrt(d // heads)
        return (scores.softmax(-1) @ split[2]).transpose(1, 2).reshape(b, n, d)

    torch.manual_seed(2)
    text, regions = torch.randn(2, 5, 32), torch.randn(2, 10, 32)
    ctx_for_regions = attend(
        lin("biattention.query2", regions), lin("biattention.key1", text), lin("biattention.value1", text)
    )
    ctx_for_text = attend(
        lin("biattention.query1", text), lin("biattention.key2", regions), lin("biattention.value2", regions)
    )
    text_att = norm("biOutput.LayerNorm1", lin("biOutput.dense1", ctx_for_text) + text)
    region_att = norm("biOutput.LayerNorm2", lin("biOutput.dense2", ctx_for_regions) + regions)
    text_out = norm(
        "v_output.LayerNorm", lin("v_output.dense", F.gelu(lin("v_intermediate.dense", text_att))) + text_att
    )
    region_out = norm(
        "t_output.LayerNorm",
        lin("t_output.dense", F.gelu(lin("t_intermediate.dense", region_att))) + region_att,
    )
    with torch.no_grad():
        got_text, got_regions = model.coattention.layers[0](text, regions, None)
    torch.testing.assert_close(got_text, text_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_regions, region_out, rtol=1e-4, atol=1e-5)


def test_gpv1_vocabulary_order_follows_the_word_list() -> None:
    config = _tiny(vocab_size=6)
    original = random_state(gpv1_shapes(config))
    words = ["__cls__", "cat", "__pad__", "__unk__", "dog", "__stop__"]
    state, _ = convert_gpv1_state_dict(original, config, vocab_words=words)
    table = original["module.answer_head.vocab_embed"]
    torch.testing.assert_close(state["answer_vectors"], table[[2, 0, 5, 3, 1, 4]])
    with pytest.raises(ConversionError, match="lacks the special tokens"):
        convert_gpv1_state_dict(original, config, vocab_words=["a", "b", "c", "d", "e", "f"])


def test_conditioning_off_leaves_the_relevance_tokens_unused() -> None:
    config = _tiny(relevance_conditioning=False)
    _, report = convert_gpv1_state_dict(random_state(gpv1_shapes(config)), config)
    assert "relevance_tokens" in report.unused


def test_renamed_key_is_named_and_its_target_is_missing() -> None:
    config = _tiny()
    original = random_state(gpv1_shapes(config))
    original["module.relevance_head.weight"] = original.pop("module.relevance_predictor.weight")
    with pytest.raises(ConversionError, match=r"not part of the gpv1 layout: relevance_head\.weight"):
        convert_gpv1_state_dict(original, config)
    with pytest.raises(ConversionError, match=r"not filled .*: relatedness\.proj\.weight"):
        convert_gpv1_state_dict(original, config, ignore_unknown=True)
    state, report = convert_gpv1_state_dict(
        original, config, ignore_unknown=True, allow_missing=["relatedness.proj.weight"]
    )
    assert report.missing == ["relatedness.proj.weight"] and "relevance_head.weight" in report.unused
    assert "relatedness.proj.weight" not in state


def test_misshaped_key_names_both_keys_and_shapes() -> None:
    config = _tiny()
    original = random_state(gpv1_shapes(config))
    original["module.co_att_transformer.0.biattention.key2.weight"] = torch.zeros(32, 31)
    message = (
        r"source co_att_transformer\.0\.biattention\.key2\.weight has shape \(32, 31\), target "
        r"coattention\.layers\.0\.text_from_regions\.attn\.in_proj_weight expects \(32, 32\)"
    )
    with pytest.raises(ConversionError, match=message):
        convert_gpv1_state_dict(original, config)
    detr = random_state(detr_shapes(config))
    detr["transformer.encoder.layers.0.self_attn.in_proj_weight"] = torch.zeros(90, 32)
    message = (
        r"source transformer\.encoder\.layers\.0\.self_attn\.in_proj_weight \(rows of chunk 0 of 3\) has "
        r"shape \(30, 32\), target visual\.detr\.encoder\.layers\.0\.self_attn\.q_proj\.weight "
        r"expects \(32, 32\)"
    )
    with pytest.raises(ConversionError, match=message):
        convert_detr_state_dict(detr, config)
    detr["transformer.encoder.layers.0.self_attn.in_proj_weight"] = torch.zeros(97, 32)  # not 3 equal parts
    with pytest.raises(ConversionError, match=r"in_proj_weight has shape \(97, 32\), .* expect \(96, 32\)"):
        convert_detr_state_dict(detr, config)


def test_different_vocabulary_tables_are_refused() -> None:
    config = _tiny()
    original = random_state(gpv1_shapes(config))
    original["module.answer_input_embedings.embedding_layer.weight"] += 1
    with pytest.raises(ConversionError, match="one vocabulary table"):
        convert_gpv1_state_dict(original, config)


# ----------------------------------------------------------------------------------------------------
# Files and the command


def _save_released(path: Path, state: dict[str, Tensor]) -> Path:
    """A file shaped like the released ``model.pth`` (weights-only loadable parts)."""
    torch.save(
        {"model": state, "epoch": 7, "step": 100, "lr": [1e-5, 1e-4], "optimizer": {"state": {}}}, path
    )
    return path


def test_load_checkpoint_unwraps_and_refuses_objects(tmp_path: Path) -> None:
    state = {"a": torch.zeros(2)}
    torch.save({"state_dict": state}, tmp_path / "wrapped.pt")
    assert load_checkpoint(tmp_path / "wrapped.pt").keys() == {"a"}
    torch.save({"model": state, "extra": _Opaque()}, tmp_path / "pickled.pth")
    with pytest.raises(
        CheckpointError, match=r"pickled\.pth: holds Python objects .*_Opaque.*refusing to unpickle"
    ):
        load_checkpoint(tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "absent.pth")


class _Opaque:
    """A class a weights-only load refuses."""


def test_convert_gpv1_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _tiny()
    checkpoint = _save_released(tmp_path / "model.pth", random_state(gpv1_shapes(config)))
    words = [f"w{i}" for i in range(config.vocab_size - 4)] + ["__pad__", "__cls__", "__stop__", "__unk__"]
    (tmp_path / "vocab.json").write_text(json.dumps(words))
    out = tmp_path / "converted"
    args = ["convert", "gpv1", "--checkpoint", str(checkpoint), "--out", str(out), "--config", "tiny"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*args, "--vocab", str(tmp_path / "vocab.json")])
    assert exit_info.value.code == 0
    assert "gpv1 conversion" in capsys.readouterr().out
    saved = GPV1Config.from_dict(json.loads((out / "config.json").read_text())["config"])
    assert saved == config
    model = GPV1(saved)
    model.load_state_dict(load_file(out / "model.safetensors"), strict=True)
    reloaded = GPV1.from_pretrained(out)  # the saved-folder layout: the model loads from it directly
    assert all(torch.equal(v, reloaded.state_dict()[k]) for k, v in model.state_dict().items())
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["missing"] == [] and "module.vision_token" not in report["unused"]
    assert "vision_token" in report["unused"]
    vocab, vectors = AnswerVocabulary.load(out / "answers")
    assert vocab.words[:5] == ["__pad__", "__cls__", "__stop__", "__unk__", "w0"]
    torch.testing.assert_close(vectors, model.answer_vectors)
    with pytest.raises(SystemExit) as exit_info:  # an existing output is kept
        cli_main(args)
    assert exit_info.value.code == 2


def test_convert_detr_command(tmp_path: Path) -> None:
    config = _tiny()
    checkpoint = _save_released(tmp_path / "detr.pth", random_state(detr_shapes(config)))
    out = tmp_path / "detr"
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["convert", "detr", "--checkpoint", str(checkpoint), "--out", str(out), "--config", "tiny"])
    assert exit_info.value.code == 0
    state = load_file(out / "model.safetensors")
    assert state and all(k.startswith(("visual.detr.", "visual.box_head.")) for k in state)
    assert json.loads((out / "conversion_report.json").read_text())["unused"].keys() == {
        "class_embed.weight",
        "class_embed.bias",
    }


@pytest.mark.parametrize("kind", ["text", "pickled", "wrong_layout", "absent", "detr_absent"])
def test_convert_command_rejects_bad_files(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.pth"
    if kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "pickled":
        torch.save({"model": {"a": torch.zeros(1)}, "config": _Opaque()}, path)
    elif kind == "wrong_layout":
        _save_released(path, random_state(detr_shapes(_tiny())))
    source = "detr" if kind.startswith("detr") else "gpv1"
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            ["convert", source, "--checkpoint", str(path), "--out", str(tmp_path / "out"), "--config", "tiny"]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err
    expected = {
        "text": "not a checkpoint file (torch.save writes a zip archive, and this is none)",
        "pickled": "refusing to unpickle",
        "wrong_layout": "not part of",
        "absent": "no such file",
        "detr_absent": "no such file",
    }
    assert expected[kind] in err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_convert_help_lists_both_sources(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["convert", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "gpv1" in out and "detr" in out and "examples:" in out
