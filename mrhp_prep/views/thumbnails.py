"""Small JPEG thumbnails of photos with their top regions drawn, inline in a page, under a
cap on how many one page embeds; every photo not shown is counted with its reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..vision.decode import ImageError, decode_image
from ..vision.store import RoiStore
from .class_names import ClassNames
from .draw import data_uri, jpeg_bytes, thumbnail
from .html_page import esc
from .regions import top_regions
from .sources import ImageFiles


@dataclass
class Thumbnails:
    """Makes <figure> elements for photos until `cap` thumbnails are in the page.

    `store` None: photos are shown without regions (a text-only run). Photos not shown are
    counted in `left_out` by reason, and the first few of each reason kept in `examples`.
    """

    files: ImageFiles
    store: RoiStore | None
    names: ClassNames | None
    cap: int
    top: int = 5
    size: int = 160
    made: int = 0
    bytes: int = 0
    left_out: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)

    def _skip(self, image_id: str, reason: str, detail: str = "") -> str:
        self.left_out[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 5:
            shown.append(f"{image_id}{': ' + detail if detail else ''}")
        return (f"<figure class=\"missing\"><figcaption>{esc(image_id)}: "
                f"{esc(reason)}</figcaption></figure>")

    def figure(self, image_id: str) -> str:
        """HTML of one photo: the thumbnail with its numbered regions and their labels, or a
        caption saying why it is not shown."""
        if self.made >= self.cap:
            self.left_out["over the --max-thumbnails cap"] += 1
            return ""
        boxes, labels, size = None, [], None
        if self.store is not None:
            if image_id not in self.store:
                return self._skip(image_id, "no regions in the RoI store")
            regions = top_regions(self.store, self.names, image_id, self.top)
            boxes, labels, size = regions.boxes, regions.labels, (regions.height, regions.width)
        try:
            if size is None:
                path = self.files.path(image_id)
                if path is None:
                    raise ImageError("no-images-root", "")
                pixels = decode_image(path)
            else:
                pixels = self.files.pixels(image_id, size)
        except ImageError as exc:
            reason = {"no-images-root": "no images root (pass --images-root)",
                      "missing": "image file missing"}.get(exc.reason, f"image {exc.reason}")
            return self._skip(image_id, reason, exc.detail)
        image = thumbnail(pixels, boxes if boxes is not None else [], size=self.size)
        encoded = jpeg_bytes(image)
        self.made += 1
        self.bytes += len(encoded)
        caption = "".join(f"<li>{esc(label)}</li>" for label in labels)
        return (f"<figure data-image-id=\"{esc(image_id)}\">"
                f"<img src=\"{data_uri(encoded, 'image/jpeg')}\" "
                f"width=\"{image.size[0]}\" height=\"{image.size[1]}\" alt=\"{esc(image_id)}\">"
                f"<figcaption>{esc(image_id)}{f'<ol>{caption}</ol>' if caption else ''}"
                "</figcaption></figure>")
