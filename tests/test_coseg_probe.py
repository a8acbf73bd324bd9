"""``benchmarks/coseg_probe.py``: where a co-segmentation answer's masks land, on a synthetic group."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from lightning_gpv.geometry import Mask
from lightning_gpv.tasks import Target, Task, TaskSample
from lightning_gpv.tasks.samples import Prediction


@pytest.fixture(scope="module")
def probe_module(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("coseg_probe")


def _square(top: int, left: int) -> np.ndarray:
    mask = np.zeros((40, 60), dtype=bool)
    mask[top : top + 10, left : left + 10] = True
    return mask


def test_masks_drawn_at_the_other_images_object_are_counted_there(
    probe_module: ModuleType, tmp_path: Path
) -> None:
    # Two images on a plain grey background, one red square each, at different places.
    objects = [_square(5, 5), _square(25, 40)]
    paths = []
    for k, mask in enumerate(objects):
        image = np.full((40, 60, 3), 128, dtype=np.uint8)
        image[mask] = (220, 30, 30)
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(image).save(paths[-1])
    target = Target(masks=[Mask.from_array(m) for m in objects], mask_image=np.arange(2))
    sample = TaskSample(Task.COSEG, [str(p) for p in paths], target, sample_id="g")
    swapped = Prediction(Task.COSEG, "g", masks=[Mask.from_array(m) for m in objects[::-1]],
                         mask_image=np.arange(2))  # fmt: skip
    figures = probe_module.probe([sample], [swapped], threshold=40.0)
    assert figures["images"] == 2 and figures["answered"] == 1.0
    assert figures["IoU with the truth"] == 0.0 and figures["share on its own image's objects"] == 0.0
    assert figures["share on another image's objects (best)"] == 1.0
    assert figures["  the truth's share there (control)"] == 0.0  # the true squares do not overlap

    right = Prediction(Task.COSEG, "g", masks=target.masks[:1], mask_image=np.arange(1))
    figures = probe_module.probe([sample], [right], threshold=40.0)
    assert figures["answered"] == 0.5  # the second image got no mask: 0 everywhere
    assert figures["IoU with the truth"] == pytest.approx(0.5)
    assert figures["share on its own image's objects"] == pytest.approx(0.5)
    assert figures["IoU with its best object"] == pytest.approx(0.5)


def test_attcoseg_pair_figures_count_the_named_pair_and_the_true_images_masks(
    probe_module: ModuleType,
) -> None:
    shared = [_square(5, 5), _square(25, 40)]  # the shared object in images 0 and 2 of four
    target = Target(masks=[Mask.from_array(m) for m in shared], mask_image=np.array([0, 2]),
                    selected_images=[0, 2])  # fmt: skip
    sample = TaskSample(Task.ATTCOSEG, ["a", "b", "c", "d"], target, sample_id="g")
    right = Prediction(Task.ATTCOSEG, "g", masks=target.masks, mask_image=np.array([0, 2]),
                       selected_images=[0, 2])  # fmt: skip
    half = Prediction(Task.ATTCOSEG, "g", masks=target.masks, mask_image=np.array([0, 1]),
                      selected_images=[0, 1])  # fmt: skip
    figures = probe_module.pair_probe([sample, sample], [right, half])
    assert figures["the true pair named"] == 0.5
    assert figures["  a random pair (chance)"] == pytest.approx(1 / 6)  # 6 pairs of 4 images
    assert figures["at least one true image named"] == 1.0
    # right: 1 and 1; half: image 0's mask is right, image 2 got none.
    assert figures["mask IoU on the true images"] == pytest.approx(0.75)
