"""Keeping a plot's text readable without changing its size: point labels move to a free spot or are left out,
x tick labels that collide turn, and the bottom margin grows to hold them.

Works on a drawn matplotlib figure (positions are measured in pixels by the renderer); the plots call it just
before saving.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

OFFSETS = ((4, 4), (4, -4), (-4, 4), (-4, -4), (4, 16), (4, -16), (-4, 16), (-4, -16), (10, 28), (10, -28))
"""Text offsets from the labelled point tried in turn (points: right/left, above/below, then farther)."""
MARGIN_PX = 4
MIN_FONT = 4
MAX_BOTTOM = 0.45
"""The bottom margin never takes more than this fraction of the figure (the axes keep the rest)."""


def place_labels(fig: Any, ax: Any, labels: Sequence[Any]) -> int:
    """Put each annotation (in the order given: the most important first) at the first offset where it stays
    inside the axes and overlaps neither the legend nor a label already placed; hide it where none does.
    Returns how many were hidden."""
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    legend = ax.get_legend()
    placed: list[Any] = [legend.get_window_extent(renderer)] if legend is not None else []
    hidden = 0
    for a in labels:
        for dx, dy in OFFSETS:
            a.xyann = (dx, dy)
            a.set_ha("left" if dx >= 0 else "right")
            a.set_va("bottom" if dy >= 0 else "top")
            box = a.get_window_extent(renderer)
            inside = (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1)
            if inside and not any(box.overlaps(p) for p in placed):
                placed.append(box)
                break
        else:
            a.set_visible(False)
            hidden += 1
    return hidden


def tick_label_boxes(fig: Any, ax: Any) -> list[Any]:
    """Pixel boxes of the x tick labels that have text, left to right."""
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]


def _collide(boxes: list[Any]) -> bool:
    return any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))


def fit_tick_labels(fig: Any, ax: Any) -> None:
    """Stand the x tick labels upright when two neighbours overlap (upright, their boxes are what the eye
    sees), smaller while they still do, then raise the axes until the lowest label and the axis title clear
    the figure's bottom edge."""
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    if _collide(tick_label_boxes(fig, ax)):
        for t in labels:
            t.set_rotation(90)
            t.set_ha("center")
        size = labels[0].get_fontsize() if labels else MIN_FONT
        while _collide(tick_label_boxes(fig, ax)) and size > MIN_FONT:
            size -= 1
            for t in labels:
                t.set_fontsize(size)
    fig.canvas.draw()  # the axis title moves below the labels' new extent at draw time
    boxes = tick_label_boxes(fig, ax)
    renderer = fig.canvas.get_renderer()
    low = min((b.y0 for b in boxes), default=MARGIN_PX)
    if ax.xaxis.label.get_text():
        low = min(low, ax.xaxis.label.get_window_extent(renderer).y0)
    if low < MARGIN_PX:
        bottom = fig.subplotpars.bottom + (MARGIN_PX - low) / fig.bbox.height
        fig.subplots_adjust(bottom=min(MAX_BOTTOM, bottom))
        fig.canvas.draw()
