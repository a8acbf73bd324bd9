"""One self-contained HTML page of a demo run: training curves and test predictions, untrained vs trained.

The page needs no network and no plotting library: pictures are ``<img>`` tags with paths relative to the
page's folder (so the folder can be moved or zipped as a whole), and loss curves are inline SVG.

Example::

    from lightning_gpv.visualize.page import PageExample, PageSection, write_page

    section = PageSection("gpv1", "rec", {"accuracy": (0.05, 0.61)}, [PageExample(...)])
    write_page(out / "index.html", [section], {"gpv1": {"train/loss": [(0, 2.3), (1, 2.1)]}})
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from urllib.parse import quote

from lightning_gpv.visualize.drawing import PALETTE

Points = list[tuple[int, float]]
ANSWER_CHARS = 300
"""Answers longer than this are cut in the page (the full text stays in the cell's tooltip)."""
SMOOTH_ABOVE = 200
"""Curves with more points than this are smoothed by default: raw per-step losses are too noisy to read."""


@dataclass
class PageExample:
    """One test sample of one task, drawn with the trained and with the untrained model's prediction."""

    sample_id: str
    trained_image: Path
    """PNG drawn with the trained model's prediction."""
    untrained_image: Path
    """PNG drawn with the untrained model's prediction."""
    trained_answer: str
    """The text the trained model wrote (boxes and masks as it wrote them; cut to ``ANSWER_CHARS`` shown)."""
    untrained_answer: str
    truth: str
    """The ground truth as text, e.g. the reference answers or ``"box [x0, y0, x1, y1]"``."""
    prompt: str
    """The instruction, question or referring expression."""


@dataclass
class PageSection:
    """The test results of one model on one task."""

    model: str
    """``"gpv1"`` or ``"vistallm"``."""
    task: str
    """The task's name, e.g. ``"rec"``, ``"vqa"``, ``"captioning"``."""
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Metric name -> ``(untrained, trained)``."""
    examples: list[PageExample] = field(default_factory=list)


def _finite(points: Sequence[tuple[int, float]]) -> Points:
    """The points with a finite value, sorted by step (a diverged step must not wreck the y range)."""
    kept = [(int(s), float(v)) for s, v in points if math.isfinite(float(v)) and math.isfinite(float(s))]
    return sorted(kept, key=lambda p: p[0])


def smooth(points: Sequence[tuple[int, float]], window: int) -> Points:
    """Trailing moving average over ``window`` points, keeping each point's step.

    Non-finite values are dropped first. The first ``window - 1`` points average what exists so far, so the
    curve starts where the raw curve starts instead of being shifted right. ``window <= 1`` only drops and
    sorts.
    """
    kept = _finite(points)
    if window <= 1:
        return kept
    out: Points = []
    total = 0.0
    for k, (step, value) in enumerate(kept):
        total += value
        if k >= window:
            total -= kept[k - window][1]
        out.append((step, total / min(k + 1, window)))
    return out


def _fmt(value: float) -> str:
    """A short number for ticks and tables; non-finite values show as a dash."""
    return f"{value:.4g}" if math.isfinite(value) else "—"


def _span(low: float, high: float) -> tuple[float, float]:
    """Widen a degenerate range (one point, a flat curve) so the mapping to pixels never divides by 0."""
    if high > low:
        return low, high
    pad = abs(low) * 0.05 or 0.5
    return low - pad, high + pad


def loss_curve_svg(
    curves: Mapping[str, Sequence[tuple[int, float]]],
    *,
    width: int = 640,
    height: int = 240,
    title: str = "",
    smooth_window: int | None = None,
) -> str:
    """An inline SVG line chart: one ``<polyline>`` per named curve of ``(step, value)`` points.

    Axes carry min/max ticks on a linear y axis, and a legend names each curve in its colour. NaN and inf
    values are dropped; an empty curve still gets its (empty) polyline and legend entry so the reader sees
    it was logged; a one-point curve also gets a dot, since a polyline of one point draws nothing.
    ``smooth_window`` ``None`` smooths curves longer than ``SMOOTH_ABOVE`` points with a window of 1% of
    their length; ``0`` or ``1`` draws raw values.
    """
    prepared: dict[str, Points] = {}
    for name, points in curves.items():
        kept = _finite(points)
        window = smooth_window if smooth_window is not None else 0
        if smooth_window is None and len(kept) > SMOOTH_ABOVE:
            window = max(2, len(kept) // 100)
        prepared[name] = smooth(kept, window)
    left, right, top, bottom = 64, 16, 28 if title else 12, 32
    plot_w, plot_h = max(width - left - right, 1), max(height - top - bottom, 1)
    every = [p for pts in prepared.values() for p in pts]
    x0, x1 = _span(min((p[0] for p in every), default=0), max((p[0] for p in every), default=1))
    y0, y1 = _span(min((p[1] for p in every), default=0.0), max((p[1] for p in every), default=1.0))

    def xy(step: float, value: float) -> str:
        x = left + (step - x0) / (x1 - x0) * plot_w
        y = top + (y1 - value) / (y1 - y0) * plot_h
        return f"{x:.1f},{y:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title or 'loss curves')}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
    ]
    if title:
        parts.append(f'<text x="{left}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>')
    base, right_x = top + plot_h, left + plot_w
    parts += [
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#444"/>',
        f'<line x1="{left}" y1="{base}" x2="{right_x}" y2="{base}" stroke="#444"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{_fmt(y1)}</text>',
        f'<text x="{left - 4}" y="{base}" text-anchor="end">{_fmt(y0)}</text>',
        f'<text x="{left}" y="{base + 14}" text-anchor="middle">{_fmt(x0)}</text>',
        f'<text x="{right_x}" y="{base + 14}" text-anchor="middle">{_fmt(x1)}</text>',
        f'<text x="{left + plot_w / 2:.1f}" y="{base + 26}" text-anchor="middle" fill="#666">step</text>',
    ]
    if not every:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
            'fill="#888">no finite values logged</text>'
        )
    for k, (name, points) in enumerate(prepared.items()):
        r, g, b = PALETTE[k % len(PALETTE)]
        color = f"rgb({r},{g},{b})"
        coords = " ".join(xy(s, v) for s, v in points)
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}">'
            f"<title>{escape(name)}</title></polyline>"
        )
        if len(points) == 1:
            cx, cy = coords.split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>')
        ly = top + 12 + 14 * k  # legend top-right: losses fall from the top left, so that corner is free
        parts.append(
            f'<line x1="{right_x - 150}" y1="{ly - 4}" x2="{right_x - 134}" y2="{ly - 4}" '
            f'stroke="{color}" stroke-width="2"/><text x="{right_x - 130}" y="{ly}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _src(image: Path, folder: Path) -> str:
    """The ``src`` of a picture, relative to the page's folder and URL-quoted (spaces, ``#`` in names)."""
    target = os.path.abspath(image)
    try:
        rel = os.path.relpath(target, os.path.abspath(folder))
    except ValueError:  # another drive on Windows: no relative path exists
        return Path(target).as_uri()
    return quote(Path(rel).as_posix())


def _answer(text: str) -> str:
    """An escaped answer cut to ``ANSWER_CHARS``, the full text kept in the tooltip."""
    shown = text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS] + "…"
    return f'<div class="answer" title="{escape(text)}">{escape(shown)}</div>'


def _picture(image: Path, answer: str, folder: Path, alt: str) -> str:
    """One grid cell: a picture and the answer it was drawn from."""
    img = f'<img src="{escape(_src(image, folder))}" alt="{escape(alt)}" loading="lazy">'
    return f"<td>{img}{_answer(answer)}</td>"


def _section_html(section: PageSection, folder: Path) -> list[str]:
    """The metrics table and the example grid of one model on one task."""
    out = [f'<h3 id="{escape(section.model)}-{escape(section.task)}">{escape(section.task)}</h3>']
    if section.metrics:
        out.append(
            "<table class='metrics'><tr><th>metric</th><th>untrained</th><th>trained</th><th>gain</th></tr>"
        )
        for name, (before, after) in section.metrics.items():
            gain = after - before
            sign = "+" if math.isfinite(gain) and gain > 0 else ""
            out.append(
                f"<tr><td>{escape(name)}</td><td>{_fmt(before)}</td><td>{_fmt(after)}</td>"
                f"<td>{sign}{_fmt(gain)}</td></tr>"
            )
        out.append("</table>")
    if not section.examples:
        out.append("<p class='empty'>no examples drawn</p>")
        return out
    heads = ("prompt", "untrained", "trained", "ground truth")
    out.append("<table class='examples'><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>")
    for ex in section.examples:
        out += [
            f"<tr><td><div class='id'>{escape(ex.sample_id)}</div>{escape(ex.prompt)}</td>",
            _picture(ex.untrained_image, ex.untrained_answer, folder, f"{ex.sample_id} untrained"),
            _picture(ex.trained_image, ex.trained_answer, folder, f"{ex.sample_id} trained"),
            f"<td>{escape(ex.truth)}</td></tr>",
        ]
    out.append("</table>")
    return out


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
table.metrics td:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
img { display: block; max-width: 320px; image-rendering: pixelated; }
.answer { font-family: monospace; font-size: 12px; max-width: 320px; overflow-wrap: anywhere; }
.id { color: #888; font-size: 11px; }
.empty { color: #888; }
"""


def write_page(
    path: Path,
    sections: Sequence[PageSection],
    curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    *,
    title: str = "lightning-gpv demo",
    notes: Sequence[str] = (),
) -> Path:
    """Write one HTML file of a run and return ``path``.

    The page holds a header with ``notes`` (wall time, command, ...), then per model its training loss curves
    (``curves[model]`` -> ``{curve name: points}``) and per section of that model a metrics table (untrained,
    trained, gain) and a grid whose rows show the prompt, the untrained picture and answer, the trained
    picture and answer, and the ground truth. Models come in the order they first appear in ``curves``, then
    ``sections``. Image paths are relative to the page's folder; all text is HTML-escaped. The file is written
    to a temporary name beside it and moved into place, so a reader never sees half a page.
    """
    path = Path(path)
    folder = path.parent
    models = list(dict.fromkeys([*curves, *(s.model for s in sections)]))
    body = [f"<h1>{escape(title)}</h1>"]
    if notes:
        body.append("<ul class='notes'>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    for model in models:
        body.append(f'<h2 id="{escape(model)}">{escape(model)}</h2>')
        if curves.get(model):
            body.append(loss_curve_svg(curves[model], title=f"{model} training loss"))
        for section in sections:
            if section.model == model:
                body += _section_html(section, folder)
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    # A unique name beside the page: os.replace is atomic only within one file system, and two writers
    # must not share a temporary file.
    temporary = folder / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(temporary, "x", encoding="utf-8") as handle:
            handle.write(page)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_demo_page(
    out: Path, metrics: Mapping[str, Mapping[str, Mapping[str, float]]], notes: Sequence[str]
) -> Path:
    """``out/index.html`` of a ``make demo`` run (:mod:`lightning_gpv.demo`): per model its loss curves,
    then per task the metrics (``metrics[model]["untrained" | "trained"]["test/{dataset}/{task}/{metric}"]``)
    and the example rows the run left in ``out/<model>_page.json``."""
    sections: list[PageSection] = []
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for model, runs in metrics.items():
        source = out / f"{model}_page.json"
        page = json.loads(source.read_text(encoding="utf-8")) if source.is_file() else {}
        curves[model] = {
            name: [(int(s), float(v)) for s, v in points] for name, points in page.get("curves", {}).items()
        }
        by_task: dict[str, PageSection] = {}
        for key, value in sorted(runs.get("trained", {}).items()):
            _, dataset, task, metric = key.split("/")
            section = by_task.setdefault(task, PageSection(model=model, task=task))
            section.metrics[f"{dataset} {metric}"] = (runs.get("untrained", {}).get(key, float("nan")), value)
        for row in page.get("examples", []):
            section = by_task.setdefault(row["task"], PageSection(model=model, task=row["task"]))
            images = {
                "trained_image": Path(row["trained_image"]),
                "untrained_image": Path(row["untrained_image"]),
            }
            texts = {
                k: row[k] for k in ("sample_id", "trained_answer", "untrained_answer", "truth", "prompt")
            }
            section.examples.append(PageExample(**images, **texts))
        sections.extend(by_task.values())
    return write_page(out / "index.html", sections, curves, notes=notes)
