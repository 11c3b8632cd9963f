"""The names of the object and attribute classes a RoI store's ids stand for.

`rois.h5` (format 2) stores `object_id` and `attr_id` counted from 0 with the background (or
"no attribute") output left out, so id k is line k of the detector's vocabulary file. The
Visual Genome vocabularies of the bottom-up-attention detector ship with the package
(`mrhp_prep/vision/data/visual-genome/`, see its NOTICE.md).

Which names a store gets (`names_for_store`, `--names auto`):

- `--weights random` stores (weights recorded as `random:SEED`): numeric ids, since an
  untrained detector's classes mean nothing;
- `butd-r101` with a checkpoint: Visual Genome names;
- `frcnn-r50-fpn-v2`: COCO names (torchvision's list, indexed by the stored label);
- imported stores, stores of format 1 (ids counted from 1) and anything else: numeric ids,
  because the store cannot tell which vocabulary its ids index (`--names visual-genome`
  names them anyway when the user knows).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import InputError

VOCABULARY_DIR = Path(__file__).resolve().parents[1] / "vision" / "data" / "visual-genome"
OBJECTS_FILE = VOCABULARY_DIR / "objects_vocab.txt"
ATTRIBUTES_FILE = VOCABULARY_DIR / "attributes_vocab.txt"
NAMINGS = ("auto", "visual-genome", "coco", "ids")
# The store format whose ids count from 0 (see vision/store.py).
ZERO_BASED_FORMAT = 2


def read_vocabulary(path: Path) -> tuple[str, ...]:
    """One class per line; of a line of synonyms ("men,man") the first."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(line.split(",")[0].strip() for line in lines)


@lru_cache(maxsize=1)
def visual_genome() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(1,600 object names, 400 attribute names) of the bundled Visual Genome vocabularies."""
    return read_vocabulary(OBJECTS_FILE), read_vocabulary(ATTRIBUTES_FILE)


@lru_cache(maxsize=1)
def coco() -> tuple[str, ...]:
    """torchvision's COCO category list: entry k names label k (0 is background)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_V2_Weights

    return tuple(FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1.meta["categories"])


@dataclass(frozen=True)
class ClassNames:
    """How ids are shown: `source` is visual-genome, coco or ids; `reason` says why."""

    source: str
    reason: str
    objects: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()

    def object_name(self, object_id: int) -> str:
        if 0 <= object_id < len(self.objects):
            return self.objects[object_id]
        return f"obj {object_id}"

    def attribute_name(self, attr_id: int) -> str | None:
        """None when the model has no attribute head (stored -1)."""
        if attr_id < 0:
            return None
        if attr_id < len(self.attributes):
            return self.attributes[attr_id]
        return f"attr {attr_id}"

    def label(self, object_id: int, attr_id: int, object_conf: float) -> str:
        """"red shirt 0.87": attribute, object and the object's confidence; without names
        "obj 12 attr 3 0.87"; no attribute when the model has no attribute head (stored -1)."""
        name = self.object_name(int(object_id))
        attribute = self.attribute_name(int(attr_id))
        if attribute is None:
            words = name
        elif self.source == "ids":
            words = f"{name} {attribute}"
        else:
            words = f"{attribute} {name}"
        return f"{words} {float(object_conf):.2f}"


def names_for_store(attrs: dict, format_version: int, naming: str = "auto") -> ClassNames:
    """The names for a store with file attributes `attrs` (RoiStore.attrs)."""
    if naming not in NAMINGS:
        raise InputError(f"unknown naming {naming!r}", field="--names",
                         hint=f"one of {', '.join(NAMINGS)}")
    if naming == "visual-genome":
        return ClassNames("visual-genome", "asked for (--names visual-genome)", *visual_genome())
    if naming == "coco":
        return ClassNames("coco", "asked for (--names coco)", coco())
    if naming == "ids":
        return ClassNames("ids", "asked for (--names ids)")
    model = str(attrs.get("model", ""))
    weights = str(attrs.get("weights_sha256", ""))
    if format_version < ZERO_BASED_FORMAT:
        return ClassNames("ids", f"store format {format_version} counts ids from 1; re-run "
                                 "extract-rois to get names")
    if weights.startswith("random"):
        return ClassNames("ids", f"the detector had random weights ({weights}): its classes "
                                 "mean nothing")
    if model == "butd-r101":
        return ClassNames("visual-genome", "butd-r101 checkpoint: Visual Genome classes",
                          *visual_genome())
    if model == "frcnn-r50-fpn-v2":
        return ClassNames("coco", "frcnn-r50-fpn-v2 checkpoint: COCO classes", coco())
    if model.startswith("imported"):
        return ClassNames("ids", f"{model} store: the files do not say which vocabulary their "
                                 "ids index (pass --names visual-genome for bottom-up-attention "
                                 "features)")
    return ClassNames("ids", f"model {model or 'unknown'}: no vocabulary known for it")
