"""Probe masks shown in the review text: the marked sentences wrapped in <mark>.

The probe-masks store keeps, per review, sentence spans as character offsets into the
manifest's `text` and which of them are marked; `ProbeMasks` reads it through the trainer's
reader (`ProbeShards`) and `highlighted` turns a text and its marked spans into HTML.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..probe.shards import ProbeShards
from .html_page import esc


class ProbeMasks:
    """Marked sentence spans by review id, from a probe-masks output folder."""

    def __init__(self, folder: str | Path):
        self.shards = ProbeShards(folder)
        self.folder = self.shards.folder
        locations = self.shards.locations()
        self._where = dict(zip(locations["id"], zip(locations["part"], locations["row"])))

    def __contains__(self, review_id: object) -> bool:
        return review_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    def spans(self, review_id: str) -> list[tuple[int, int]] | None:
        """[(start, end)] character offsets of the review's marked sentences; None when the
        store has no record of the review."""
        place = self._where.get(review_id)
        if place is None:
            return None
        starts, ends = self.shards.marked_spans(int(place[0]), int(place[1]))
        return [(int(s), int(e)) for s, e in zip(np.asarray(starts), np.asarray(ends))]


def highlighted(text: str, spans: list[tuple[int, int]] | None) -> str:
    """`text` as HTML with each span [start, end) in <mark class="probe" data-start data-end>.

    Spans are clipped to the text; overlapping or touching ones are joined, so every
    character is marked at most once.
    """
    if not spans:
        return esc(text)
    joined: list[list[int]] = []
    for start, end in sorted((max(0, s), min(len(text), e)) for s, e in spans):
        if end <= start:
            continue
        if joined and start <= joined[-1][1]:
            joined[-1][1] = max(joined[-1][1], end)
        else:
            joined.append([start, end])
    pieces, position = [], 0
    for start, end in joined:
        pieces.append(esc(text[position:start]))
        pieces.append(f"<mark class=\"probe\" data-start=\"{start}\" data-end=\"{end}\">"
                      f"{esc(text[start:end])}</mark>")
        position = end
    pieces.append(esc(text[position:]))
    return "".join(pieces)
