from __future__ import annotations

from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_gpv.models.gpv1 import GPV1Config
from lightning_gpv.models.gpv1.detr import DetrRegionEncoder, build_detr


def _encoder(**visual: object) -> DetrRegionEncoder:
    torch.manual_seed(0)
    return DetrRegionEncoder(GPV1Config.tiny(visual=visual).visual, hidden_size=24).eval()


def test_region_shapes_and_box_range() -> None:
    enc = _encoder()
    out = enc(torch.randn(2, 3, 64, 96))
    assert out.features.shape == (2, 10, 24)
    assert out.detr_features.shape == (2, 10, 32)
    assert out.objectness_logits.shape == (2, 10, 2)
    assert out.boxes.shape == (2, 10, 4) and out.boxes.min() >= 0 and out.boxes.max() <= 1
    assert enc.region_proj.in_features == 32 + 64  # decoder features + RoI-pooled C5 channels


def test_without_roi_features() -> None:
    enc = _encoder(use_roi_features=False)
    assert enc.region_proj.in_features == 32
    assert enc(torch.randn(1, 3, 64, 64)).features.shape == (1, 10, 24)


def test_roi_features_are_layer_normed_means() -> None:
    enc = _encoder()
    fmap = torch.randn(1, 64, 4, 4)
    whole = torch.tensor([[[0.5, 0.5, 1.0, 1.0]]])
    feats = enc.roi_features(fmap, whole)
    assert feats.shape == (1, 1, 64)
    torch.testing.assert_close(feats.mean(-1), torch.zeros(1, 1), atol=1e-5, rtol=0)
    # A box over the whole map pools (about) the channel means.
    expected = torch.nn.functional.layer_norm(fmap.mean(dim=(-2, -1)), (64,))
    assert torch.nn.functional.cosine_similarity(feats[0], expected).item() > 0.95


def test_backbone_stem_and_first_stage_stay_frozen() -> None:
    enc = _encoder()
    names = {n: p.requires_grad for n, p in enc.detr.backbone.named_parameters()}
    assert not any(v for n, v in names.items() if "embedder" in n or "stages.0." in n)
    assert all(v for n, v in names.items() if "stages.3." in n)
    enc.set_detr_frozen(True)
    assert not any(p.requires_grad for p in enc.detr_parameters())
    assert all(p.requires_grad for p in enc.objectness.parameters())
    assert all(p.requires_grad for p in enc.region_proj.parameters())
    enc.set_detr_frozen(False)
    names_after = {n: p.requires_grad for n, p in enc.detr.backbone.named_parameters()}
    assert names_after == names


class _KernelLog(TorchDispatchMode):
    """Records the ATen kernels run, with the shapes and strides of their tensor arguments.

    ``detach`` is left out: autograd adds it for the tensors that trainable weights save for backward.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[tuple[tuple[int, ...], tuple[int, ...]]]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if func is not torch.ops.aten.detach.default:
            self.calls.append((str(func), [(tuple(t.shape), t.stride()) for t in tensors]))
        return func(*args, **(kwargs or {}))


def test_freezing_detr_does_not_change_kernels_or_outputs() -> None:
    """A frozen DETR (stage 1, or the model a checkpoint was saved from) and a trainable one with the same
    weights (e.g. reloaded) run the same kernels and agree bit for bit.

    ``torch.matmul`` chooses between one GEMM over a contiguous copy and a batched GEMM from the
    ``requires_grad`` flag of the weight when the input is a non-contiguous 3-D tensor (grad mode on or
    off); the two can round differently on some CPUs and not on others, so the kernel log is the check
    that holds on every CPU, and the bitwise comparison the end-to-end one.
    """
    enc = _encoder()
    pixels = torch.randn(2, 3, 64, 96)  # a 2 x 3 feature map: 6 tokens per image
    runs = {}
    for frozen in (False, True):
        enc.set_detr_frozen(frozen)
        for grad in (True, False):
            log = _KernelLog()
            with torch.set_grad_enabled(grad), log:
                out = enc(pixels)
            runs[frozen, grad] = log.calls, out
    for grad in (True, False):
        (calls_a, a), (calls_b, b) = runs[False, grad], runs[True, grad]
        assert calls_a == calls_b
        for name in ("boxes", "objectness_logits", "features"):
            assert torch.equal(getattr(a, name), getattr(b, name)), (name, grad)


def test_gradients_reach_detr() -> None:
    enc = _encoder()
    enc.train()
    out = enc(torch.randn(1, 3, 64, 64))
    (out.features.sum() + out.boxes.sum()).backward()
    assert enc.detr.input_projection.weight.grad is not None
    assert enc.box_head.layers[0].weight.grad is not None


def test_pretrained_detr_loads_from_local_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = GPV1Config.tiny().visual
    build_detr(config).save_pretrained(tmp_path / "detr")
    a = DetrRegionEncoder(config.__class__(**{**vars(config), "name_or_path": str(tmp_path / "detr")}), 24)
    reference = build_detr(config.__class__(**{**vars(config), "name_or_path": str(tmp_path / "detr")}))
    torch.testing.assert_close(a.detr.input_projection.weight, reference.model.input_projection.weight)
    torch.testing.assert_close(a.box_head.layers[0].weight, reference.bbox_predictor.layers[0].weight)


def test_detr_parameter_lists_survive_wrapper_modules() -> None:
    """FSDP1 and activation checkpointing insert wrapper modules into parameter names (as
    ``GPV1FSDPStrategy`` does before ``configure_optimizers`` asks for DETR's parameters)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    from lightning_gpv.models.gpv1.config import GPV1Config
    from lightning_gpv.models.gpv1.detr import DetrRegionEncoder

    encoder = DetrRegionEncoder(GPV1Config.tiny().visual, hidden_size=32)
    before = [id(p) for p in encoder.trainable_detr_parameters()]
    layers = encoder.detr.encoder.layers
    for k, layer in enumerate(layers):
        layers[k] = checkpoint_wrapper(layer)
    assert any("_checkpoint_wrapped_module." in name for name, _ in encoder.named_parameters())
    assert [id(p) for p in encoder.trainable_detr_parameters()] == before
    encoder.set_detr_frozen(True)
    assert not any(p.requires_grad for p in encoder.trainable_detr_parameters())
    encoder.set_detr_frozen(False)
    assert all(p.requires_grad for p in encoder.trainable_detr_parameters())
