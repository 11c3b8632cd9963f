"""Refusals of files torch cannot read with weights_only=True say why in our words, never
torch's advice to read them with weights_only=False (which would run code from the file).

Each file is a real one: written by torch.save and cut short, a pickle of an object, text.
Both readers are checked: detector weights and training checkpoints.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from mrhp_prep.errors import InputError
from mrhp_prep.train.loop import checkpoints
from mrhp_prep.vision.checkpoints import read_checkpoint


class Payload:
    """Any class: a weights-only read must refuse to rebuild it."""


def _zip_cut_short(path):
    torch.save({"w": torch.ones(64)}, path)
    path.write_bytes(path.read_bytes()[:200])


def _legacy_cut_short(path):
    with open(path, "wb") as handle:
        torch.save({"w": torch.ones(64)}, handle, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:40])


FILES = {
    "text": (lambda p: p.write_text("this is not a checkpoint\n"), "not a file torch.save wrote"),
    "empty": (lambda p: p.write_bytes(b""), "it is empty"),
    "zip cut short": (_zip_cut_short, "damaged or truncated"),
    "old format cut short": (_legacy_cut_short, "ends early"),
    "an object": (lambda p: torch.save({"model": {"w": torch.ones(2)}, "x": Payload()}, p),
                  "pickled Python object (test_torch_files.Payload)"),
    "a plain pickle": (lambda p: p.write_bytes(pickle.dumps({"w": [1.0]}, protocol=4)),
                       "not a file torch.save wrote"),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")   # the plain pickle's
@pytest.mark.parametrize("kind", list(FILES))
@pytest.mark.parametrize("reader", ["detector weights", "training checkpoint"])
def test_an_unreadable_torch_file_is_named_without_torchs_advice(kind, reader, tmp_path):
    write, reason = FILES[kind]
    path = tmp_path / "file.pth"
    write(path)
    with pytest.raises(InputError) as refused:
        if reader == "detector weights":
            read_checkpoint(path)
        else:
            checkpoints.load(path)
    message = str(refused.value)
    assert str(path) in message and reason in message, message
    for advice in ("weights_only", "trust", "safe_globals"):
        assert advice not in message, message
