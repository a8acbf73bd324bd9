"""Predictions from Python: a saved model folder, images and a task.

```python
from lightning_gpv import Predictor

predictor = Predictor.from_pretrained("outputs/export/vistallm", device="cuda", dtype=torch.bfloat16)
prediction = predictor("photo.jpg", "rec", "the red mug")        # one Prediction
predictions = predictor(["a.jpg", "b.jpg"], "captioning")         # one per image
predictor.draw(prediction).save("photo_rec.png")                  # boxes, masks and text drawn
```

Boxes (``xyxy``) and masks come back in the original image's pixels, those of the image as displayed: the
EXIF orientation of a photo (file or PIL image) is applied, as
:func:`~lightning_gpv.tasks.processing.load_image` does with ``exif_transpose=True``. Images of any PIL
mode, and uint8, uint16, float or bool arrays, become RGB by the rules of
:func:`~lightning_gpv.tasks.processing.to_rgb`. The folder is one written by
``save_pretrained`` of either family (``GPV1Module``, ``VistaLLMModule``; ``lightning-gpv export`` writes one
from a checkpoint); the predictions are those of the family's ``predict_step``, as ``lightning-gpv
predict`` makes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from PIL import Image

from lightning_gpv.models.hub import family_of, local_folder
from lightning_gpv.systems import SYSTEMS
from lightning_gpv.tasks.catalogue import Task
from lightning_gpv.tasks.processing import UprightImagePath, to_rgb
from lightning_gpv.tasks.requests import check_request, request_sample
from lightning_gpv.tasks.samples import Prediction, TaskSample

ImageInput = str | Path | Image.Image | np.ndarray
"""An image path, a PIL image (any mode, EXIF orientation applied) or an array: ``(H, W)`` gray, ``(H, W, 3)``
RGB or ``(H, W, 4)`` RGBA of dtype uint8, uint16, float or bool (see
:func:`~lightning_gpv.tasks.processing.to_rgb`)."""


def _image(image: ImageInput) -> str | np.ndarray:
    """The sample's image: an ``(H, W, 3)`` uint8 RGB array in displayed orientation, or a path that the
    processor loads upright (:class:`~lightning_gpv.tasks.processing.UprightImagePath`)."""
    if isinstance(image, Image.Image):
        return to_rgb(image, exif_transpose=True)
    if isinstance(image, np.ndarray):
        try:
            return to_rgb(image)
        except ValueError as err:
            raise ValueError(f"Predictor: {err}") from None
    if isinstance(image, (str, Path)):
        return UprightImagePath(image)
    raise TypeError(
        f"Predictor: an image must be a path, a PIL image or an array, got {type(image).__name__}"
    )


def _cast_floats(batch: Any, dtype: torch.dtype) -> Any:
    """The batch with its floating-point tensors (pixels) in ``dtype``: a model cast to bf16 takes bf16
    inputs (its convolutions do not cast them)."""
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
            setattr(batch, f.name, value.to(dtype))
    return batch


class Predictor:
    """A model of either family ready to answer requests.

    Args:
        system: The family's LightningModule (its model, processor and ``predict_step``).
        device: Where the model runs.
        batch_size: Samples per forward pass when several images are given.
    """

    def __init__(
        self, system: LightningModule, device: str | torch.device = "cpu", batch_size: int = 8
    ) -> None:
        self.system = system.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._samples: dict[str, TaskSample] = {}
        self._requests = 0  # requests answered so far: sample ids stay unique across calls

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        batch_size: int = 8,
        **system_kwargs: Any,
    ) -> Predictor:
        """Load a saved model folder (local or a hub repository; offline from the cache).

        Args:
            name_or_path: The folder or hub repository id.
            device: Where the model runs.
            dtype: Cast the weights (e.g. ``torch.bfloat16`` on a GPU); ``None`` keeps float32.
            batch_size: Samples per forward pass.
            system_kwargs: Settings of the family's system, e.g. ``max_new_tokens`` (VistaLLM),
                ``num_beams`` or ``classification_labels`` (GPV-1).
        """
        folder = local_folder(name_or_path)
        family = family_of(folder)
        if family not in SYSTEMS:
            raise ValueError(f"{folder}: unknown model family {family!r} (known: {sorted(SYSTEMS)})")
        system = SYSTEMS[family](config=str(folder), **system_kwargs)
        if dtype is not None:
            system.model.to(dtype)
        return cls(system, device=device, batch_size=batch_size)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's weights (images are cast to it)."""
        return next(self.system.model.parameters()).dtype

    @property
    def processor(self) -> Any:
        """The family's processor (tokenizers, image resizing, answer parsing)."""
        return self.system.processor

    def __call__(
        self,
        images: ImageInput | Sequence[ImageInput] | Sequence[Sequence[ImageInput]],
        task: str | Task,
        prompt: str | None = None,
    ) -> Prediction | list[Prediction]:
        """Answer ``task`` for each image (or group of images, for multi-image tasks such as NLVR2).

        Args:
            images: One image (returns one :class:`Prediction`), or a list (returns a list): of images for
                single-image tasks, of image groups for multi-image tasks.
            task: The task (``"vqa"``, ``"captioning"``, ``"rec"``, ``"res"``, ``"localization"``, ...).
            prompt: The question (VQA, NLVR2), expression (REC, RES, GREC, GRES) or category
                (localization); tasks with a fixed instruction take none.
        """
        spec = check_request(task, prompt, where="Predictor: ")
        single = not isinstance(images, (list, tuple))
        requests = [images] if single else list(images)
        groups = []
        for request in requests:
            group = list(request) if isinstance(request, (list, tuple)) else [request]
            if not spec.accepts_num_images(len(group)):
                hint = ""
                if spec.multi_image and not isinstance(request, (list, tuple)):
                    hint = " (a multi-image task takes a list of image groups: [[a, b], ...])"
                raise ValueError(
                    f"Predictor: task {spec.task.value!r} does not take {len(group)} image(s){hint}"
                )
            groups.append([_image(image) for image in group])
        samples = [
            request_sample(spec.task, group, prompt, sample_id=f"request-{i}", metadata={"prompt": prompt})
            for i, group in enumerate(groups, start=self._requests)
        ]
        predictions = []
        for start in range(0, len(samples), self.batch_size):
            chunk = samples[start : start + self.batch_size]
            batch = self.processor.collate([self.processor.encode(s, train=False) for s in chunk])
            batch = _cast_floats(self.system.transfer_batch_to_device(batch, self.device, 0), self.dtype)
            with torch.no_grad():
                predictions += self.system.predict_step(batch, 0)
        self._samples = {s.sample_id: s for s in samples}
        self._requests += len(samples)
        return predictions[0] if single else predictions

    def draw(self, prediction: Prediction, **kwargs: Any) -> Image.Image:
        """The images of the request ``prediction`` answers, with its boxes, masks and text drawn (keyword
        arguments: :func:`~lightning_gpv.visualize.draw_prediction_for`; without ``scale``, small images are
        enlarged as :class:`~lightning_gpv.prediction_writer.PredictionWriter` does)."""
        from lightning_gpv.prediction_writer import auto_scale
        from lightning_gpv.visualize import draw_prediction_for

        sample = self._samples.get(prediction.sample_id)
        if sample is None:
            raise ValueError(f"no request {prediction.sample_id!r} in the last call: draw a fresh prediction")
        kwargs.setdefault("scale", auto_scale(sample))
        return draw_prediction_for(sample, prediction, show_target=False, **kwargs)


__all__ = ["ImageInput", "Predictor"]
