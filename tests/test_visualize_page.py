"""The demo's HTML page: pictures resolve after moving the folder, text is escaped, curves draw as SVG."""

from __future__ import annotations

import math
import os
import re
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from lightning_gpv.visualize.page import (
    ANSWER_CHARS,
    PageExample,
    PageSection,
    loss_curve_svg,
    smooth,
    write_page,
)

VOID = {"img", "meta", "br", "hr", "input", "link"}
SVG = "{http://www.w3.org/2000/svg}"


class PageParser(HTMLParser):
    """Collects image sources, every tag opened, answer texts, and checks that tags nest and close."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.tags: list[str] = []
        self.answers: list[str] = []
        self.doctype = False
        self._stack: list[str] = []
        self._in_answer = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = dict(attrs)
        if tag == "img":
            self.sources.append(found["src"] or "")
        if tag not in VOID:
            self._stack.append(tag)
        if tag == "div" and found.get("class") == "answer":
            self._in_answer = True
            self.answers.append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)  # `<line .../>` in SVG: opened and closed at once

    def handle_endtag(self, tag: str) -> None:
        assert self._stack and self._stack[-1] == tag, f"</{tag}> closes {self._stack[-1:]}"
        self._stack.pop()
        self._in_answer = False

    def handle_data(self, data: str) -> None:
        if self._in_answer:
            self.answers[-1] += data

    def finish(self) -> PageParser:
        self.close()
        assert not self._stack, f"unclosed tags {self._stack}"
        return self


def _parse(page: Path) -> PageParser:
    parser = PageParser()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.finish()


def _png(path: Path, color: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), color).save(path)
    return path


def _example(pictures: Path, name: str, **text: str) -> PageExample:
    fields = {
        "trained_answer": "a red circle",
        "untrained_answer": "zzz",
        "truth": "red circle",
        "prompt": "?",
    }
    fields.update(text)
    return PageExample(
        sample_id=name,
        trained_image=_png(pictures / f"{name} trained.png", (0, 200, 0)),  # a space must survive the URL
        untrained_image=_png(pictures / f"{name}#untrained.png", (200, 0, 0)),  # and so must a '#'
        **fields,
    )


def _sections(pictures: Path) -> list[PageSection]:
    return [
        PageSection("gpv1", "rec", {"accuracy": (0.125, 0.75)}, [_example(pictures / "gpv1", "rec_1")]),
        PageSection(
            "vistallm",
            "vqa",
            {"vqa_accuracy": (0.0625, 0.5), "parse_rate": (0.9, 0.8)},
            [_example(pictures / "vistallm", "vqa_1"), _example(pictures / "vistallm", "vqa_2")],
        ),
    ]


CURVES = {"gpv1": {"train/loss": [(0, 3.0), (1, 2.0), (2, 1.5)]}, "vistallm": {"train/loss": [(0, 5.0)]}}


def test_page_images_resolve_after_moving_the_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    page = write_page(run / "index.html", _sections(run / "pictures"), CURVES, notes=["wall time 12 s"])
    assert page == run / "index.html"
    moved = tmp_path / "moved"
    shutil.move(run, moved)  # absolute image paths would now point at nothing
    parsed = _parse(moved / "index.html")
    assert parsed.doctype and parsed.tags[:2] == ["html", "head"]
    assert len(parsed.sources) == 6  # an untrained and a trained picture for each of three examples
    for src in parsed.sources:
        assert not os.path.isabs(unquote(src)) and "://" not in src
        assert (moved / unquote(src)).is_file(), src


def test_relative_paths_are_taken_from_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    page = write_page(Path("site/index.html"), _sections(Path("pictures")), {})
    sources = _parse(tmp_path / page).sources
    assert sources and all(unquote(s).startswith("../pictures/") for s in sources)
    assert all((tmp_path / "site" / unquote(s)).is_file() for s in sources)


def test_text_is_escaped_and_long_answers_are_cut(tmp_path: Path) -> None:
    hostile = "<script>alert(1)</script>"
    example = _example(tmp_path, "x", trained_answer=hostile, prompt="<b>bold</b> & more", truth="<i>t</i>")
    example.untrained_answer = "box " * 2000
    section = PageSection("gpv1", "<img src=x>", {"<td>": (0.0, 1.0)}, [example])
    page = write_page(tmp_path / "index.html", [section], {"gpv1": {hostile: [(0, 1.0)]}}, notes=[hostile])
    text = page.read_text(encoding="utf-8")
    parsed = _parse(page)
    assert "script" not in parsed.tags and "b" not in parsed.tags and "i" not in parsed.tags
    assert "<script>" not in text.lower() and "&lt;script&gt;" in text
    assert parsed.sources.count("x") == 0 and len(parsed.sources) == 2  # the task name made no <img>
    untrained, trained = parsed.answers
    assert trained == hostile  # escaped in the file, read back as the text the model wrote
    assert len(untrained) <= ANSWER_CHARS + 1 and untrained.endswith("…")


def test_every_section_shows_its_task_and_metrics_under_its_model(tmp_path: Path) -> None:
    page = write_page(tmp_path / "index.html", _sections(tmp_path / "pictures"), CURVES)
    text = page.read_text(encoding="utf-8")
    for value in ("0.125", "0.75", "+0.625", "0.0625", "0.5", "+0.4375", "0.9", "0.8", "-0.1"):
        assert f"<td>{value}</td>" in text, value
    for name in ("accuracy", "vqa_accuracy", "parse_rate"):
        assert f"<td>{name}</td>" in text
    # Each task sits below its own model's heading, with that model's curves.
    order = [
        text.index(marker) for marker in ('<h2 id="gpv1"', ">rec</h3>", '<h2 id="vistallm"', ">vqa</h3>")
    ]
    assert order == sorted(order)
    assert text.count("<svg") == 2 and text.index("gpv1 training loss") < order[1]


def test_models_without_curves_or_examples_still_get_a_section(tmp_path: Path) -> None:
    section = PageSection("vistallm", "captioning", {"cider": (0.0, 0.25)}, [])
    text = write_page(tmp_path / "index.html", [section], {"gpv1": {}}).read_text(encoding="utf-8")
    assert '<h2 id="gpv1"' in text and ">captioning</h3>" in text and "<td>0.25</td>" in text
    assert "<svg" not in text and "no examples drawn" in text


def _polylines(svg: str) -> list[list[tuple[float, float]]]:
    root = ET.fromstring(svg)  # also proves the SVG is well-formed XML
    lines = []
    for node in root.iter(f"{SVG}polyline"):
        pairs = [p.split(",") for p in node.get("points", "").split()]
        lines.append([(float(x), float(y)) for x, y in pairs])
    return lines


def test_svg_has_one_polyline_per_curve_and_survives_bad_curves() -> None:
    curves = {
        "train/loss": [(0, 2.0), (1, 1.0), (2, float("nan")), (3, 0.5)],
        "empty": [],
        "all_bad": [(0, float("nan")), (1, float("inf"))],
        "one": [(2, 1.0)],
    }
    svg = loss_curve_svg(curves, width=300, height=120, title="losses")
    lines = _polylines(svg)
    assert [len(line) for line in lines] == [3, 0, 0, 1]
    assert "nan" not in svg.lower() and "inf" not in svg.lower()
    for x, y in (p for line in lines for p in line):
        assert math.isfinite(x) and math.isfinite(y) and 0 <= x <= 300 and 0 <= y <= 120
    assert len(ET.fromstring(svg).findall(f"{SVG}circle")) == 1  # the lone point is visible
    for name in curves:
        assert f">{name}</text>" in svg  # legend


def test_svg_of_nothing_or_one_point_is_well_formed() -> None:
    assert _polylines(loss_curve_svg({})) == []
    assert "no finite values" in loss_curve_svg({"a": [(0, float("nan"))]})
    [[(x, y)]] = _polylines(loss_curve_svg({"a": [(7, 0.0)]}))
    assert math.isfinite(x) and math.isfinite(y)


def test_svg_maps_steps_right_and_values_up() -> None:
    [line] = _polylines(loss_curve_svg({"a": [(10, 0.0), (0, 4.0), (5, 1.0)]}, width=400, height=200))
    xs, ys = [x for x, _ in line], [y for _, y in line]
    assert xs == sorted(xs)  # points are drawn in step order
    assert ys[0] < ys[1] < ys[2]  # the highest loss is nearest the top
    ticks = re.findall(r">([-0-9.e+]+)</text>", loss_curve_svg({"a": [(10, 0.0), (0, 4.0)]}))
    assert {"0", "4", "10"} <= set(ticks)


def test_smooth_is_a_trailing_mean_that_keeps_steps() -> None:
    points = [(0, 1.0), (1, 2.0), (2, float("nan")), (3, 3.0), (4, 4.0), (5, 5.0)]
    assert smooth(points, 3) == [(0, 1.0), (1, 1.5), (3, 2.0), (4, 3.0), (5, 4.0)]
    assert smooth(points, 1) == [(0, 1.0), (1, 2.0), (3, 3.0), (4, 4.0), (5, 5.0)]


def test_long_noisy_curves_are_smoothed_by_default() -> None:
    noisy = {"loss": [(k, 1.0 + 0.5 * (-1) ** k) for k in range(1000)]}

    def jitter(svg: str) -> float:
        [line] = _polylines(svg)
        return sum(abs(b[1] - a[1]) for a, b in zip(line, line[1:])) / (len(line) - 1)

    assert jitter(loss_curve_svg(noisy)) < 0.1 * jitter(loss_curve_svg(noisy, smooth_window=1))


def test_rewriting_replaces_the_page_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    page = tmp_path / "index.html"
    write_page(page, [], CURVES, title="first run")
    write_page(page, [], CURVES, title="second run")
    text = page.read_text(encoding="utf-8")
    assert "<title>second run</title>" in text and "first run" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]


def test_a_failed_write_keeps_the_old_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = write_page(tmp_path / "index.html", [], CURVES, title="old")
    before = page.read_bytes()

    def broken(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_page(page, [], CURVES, title="new")
    assert page.read_bytes() == before  # a reader still sees the whole old page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]
