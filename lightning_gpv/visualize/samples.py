"""Pictures of task samples and of a model's predictions next to the ground truth."""

from __future__ import annotations

from PIL import Image

from lightning_gpv.tasks.processing import load_image
from lightning_gpv.tasks.samples import Prediction, TaskSample
from lightning_gpv.visualize.drawing import PALETTE, TARGET_COLOR, Mark, draw_prediction, make_grid


def sample_text(sample: TaskSample) -> str:
    """The sample's question, expression and category, one per line."""
    parts = []
    if sample.question:
        parts.append(f"Q: {sample.question}")
    if sample.expression:
        parts.append(f"expr: {sample.expression}")
    if sample.category:
        parts.append(f"category: {sample.category}")
    return "\n".join(parts)


def target_text(sample: TaskSample) -> str | None:
    """The target text, else up to five acceptable answers; ``None`` when the target has no text."""
    target = sample.target
    if target.text:
        return target.text
    if target.answers:
        return " | ".join(target.answers[:5])
    return None


def _input_marks(sample: TaskSample, index: int) -> list[Mark]:
    """The input region (BoxQA, REG) and point (PointQA), which refer to the first image."""
    marks: list[Mark] = []
    if index == 0 and sample.region is not None:
        marks.append(("region", sample.region))
    if index == 0 and sample.point is not None:
        marks.append(("point", sample.point))
    return marks


def _target_marks(sample: TaskSample, index: int) -> list[Mark]:
    target = sample.target
    marks: list[Mark] = [("target_box", b) for b, img in zip(target.boxes, target.box_image) if img == index]
    marks += [("target_mask", m) for m, img in zip(target.masks, target.mask_image) if img == index]
    if index == 0 and len(target.points):
        marks.append(("target_points", target.points))
    return marks


def _indices(sample: TaskSample, image_index: int | None) -> list[int]:
    if image_index is None:
        return list(range(sample.num_images))
    if not 0 <= image_index < sample.num_images:
        raise IndexError(f"image_index {image_index} out of range for {sample.num_images} images")
    return [image_index]


def _title(sample: TaskSample, index: int) -> str:
    title = f"{sample.task.value}: {sample.sample_id}" if sample.sample_id else sample.task.value
    return title + (f" [image {index}]" if sample.num_images > 1 else "")


def _finish(panels: list[Image.Image], cols: int | None) -> Image.Image:
    return panels[0] if len(panels) == 1 else make_grid(panels, cols or min(len(panels), 4))


def draw_sample(
    sample: TaskSample,
    image_index: int | None = None,
    *,
    scale: float = 1.0,
    line_width: int = 2,
    cols: int | None = None,
) -> Image.Image:
    """Draw a :class:`~lightning_gpv.tasks.samples.TaskSample` with its target.

    Target boxes, masks and points are drawn in instance colours; the input region (BoxQA, REG) is a dashed
    white box and the input point (PointQA) a white cross; the question / expression / category and the
    target text (or the first answers) are written under the first drawn image, the task and sample id above
    each. Images that hold the answer (``target.selected_images``) get a green frame.

    Args:
        sample: the sample; its images are paths or ``(H, W, 3)`` arrays.
        image_index: draw only this image; ``None`` draws every image of a multi-image sample in a grid.
        scale: enlarge each image before drawing.
        line_width: line width in output pixels.
        cols: grid columns for multi-image samples (default ``min(num_images, 4)``).
    """
    target = sample.target
    answer = target_text(sample)
    text = "\n".join(t for t in (sample_text(sample), f"A: {answer}" if answer else "") if t)
    indices = _indices(sample, image_index)
    panels = []
    for i in indices:
        panels.append(
            draw_prediction(
                load_image(sample.images[i]),
                boxes=target.boxes[target.box_image == i],
                masks=[m for m, img in zip(target.masks, target.mask_image) if img == i],
                points=target.points if i == 0 else None,
                text=text if i == indices[0] else None,
                title=_title(sample, i),
                scale=scale,
                line_width=line_width,
                border=TARGET_COLOR if i in target.selected_images else None,
                marks=_input_marks(sample, i),
            )
        )
    return _finish(panels, cols)


def draw_prediction_for(
    sample: TaskSample,
    prediction: Prediction,
    image_index: int | None = None,
    *,
    show_target: bool = True,
    scale: float = 1.0,
    score_threshold: float | None = None,
    max_boxes: int | None = 10,
    line_width: int = 2,
    cols: int | None = None,
) -> Image.Image:
    """Draw a model's :class:`~lightning_gpv.tasks.samples.Prediction` on its sample's images.

    Predicted boxes (the best ``max_boxes`` by score, with their scores), masks and points are drawn in
    instance colours, and the prediction text under the first drawn image after the sample's question /
    expression. With ``show_target`` the target boxes are dashed green, target masks and points are drawn
    in green and the target text is added. Images the model selected (``prediction.selected_images``) get a
    frame in the first palette colour; the parser's ``dropped`` messages are listed.

    Args:
        sample: the sample that was answered.
        prediction: the model's answer (same conventions as the sample).
        image_index: draw only this image; ``None`` draws every image in a grid.
        show_target: also draw the ground truth.
        scale: enlarge each image before drawing.
        score_threshold: hide boxes scored below it.
        max_boxes: draw at most this many boxes (GPV-1 scores all its regions).
        line_width: line width in output pixels.
        cols: grid columns for multi-image samples.
    """
    lines = [sample_text(sample), f"pred: {prediction.text}" if prediction.text else ""]
    answer = target_text(sample)
    if show_target and answer:
        lines.append(f"target: {answer}")
    if prediction.dropped:
        lines.append(f"dropped: {'; '.join(prediction.dropped)}")
    text = "\n".join(t for t in lines if t)
    indices = _indices(sample, image_index)
    panels = []
    for i in indices:
        keep = prediction.box_image == i
        marks = _input_marks(sample, i) + (_target_marks(sample, i) if show_target else [])
        panels.append(
            draw_prediction(
                load_image(sample.images[i]),
                boxes=prediction.boxes[keep],
                scores=None if prediction.scores is None else prediction.scores[keep],
                masks=[m for m, img in zip(prediction.masks, prediction.mask_image) if img == i],
                points=prediction.points if i == 0 else None,
                text=text if i == indices[0] else None,
                title=_title(sample, i),
                scale=scale,
                score_threshold=score_threshold,
                max_boxes=max_boxes,
                line_width=line_width,
                border=PALETTE[0] if i in prediction.selected_images else None,
                marks=marks,
            )
        )
    return _finish(panels, cols)
