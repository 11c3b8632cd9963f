"""How a failed write is told to be the machine's fault, on a small real tmpfs: the errors
that numpy, torch and Python itself raise on a full disk, and the ones that are not."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch

from disk_faults import mount_small_disk
from mrhp_prep.atomic import atomic_path
from mrhp_prep.errors import EnvironmentFault
from mrhp_prep.faults import diagnose, environment_guard, require_free_space


@pytest.fixture
def small_disk(tmp_path):
    yield from mount_small_disk(tmp_path / "disk", size="1m")


def _raised(write) -> BaseException:
    try:
        write()
    except BaseException as exc:      # what the library raised, as it raised it
        return exc
    raise AssertionError("the write did not fail")


def test_each_library_reports_a_full_disk_its_own_way_and_all_are_recognised(small_disk):
    folder = small_disk.path / "stage"
    folder.mkdir()
    small_disk.fill()
    big = np.ones(100_000, np.float32)
    raised = {
        "python": _raised(lambda: (folder / "a.bin").write_bytes(big.tobytes())),
        "numpy": _raised(lambda: big.tofile(folder / "b.bin")),
        "torch": _raised(lambda: torch.save({"w": torch.ones(100_000)}, folder / "c.pt")),
    }
    assert isinstance(raised["torch"], RuntimeError)           # no errno at all
    assert getattr(raised["numpy"], "errno", None) is None     # "N requested and M written"
    for library, exc in raised.items():
        fault = diagnose(exc, [folder])
        assert fault is not None and fault.kind == "full", library
        assert f"disk that holds {folder}" in fault.message


def test_an_atomic_write_names_the_folder_while_the_disk_is_still_full(small_disk):
    small_disk.fill(leave=64 << 10)
    big = np.ones(100_000, np.float32)          # 400 kB: the write fails half-way
    with pytest.raises(EnvironmentFault, match="no space left") as caught:
        with atomic_path(small_disk.path / "stage" / "x.npy") as tmp:
            big.tofile(tmp)
    assert caught.value.path == str(small_disk.path / "stage")
    assert not list((small_disk.path / "stage").iterdir())     # the half file is gone


def test_errors_that_are_not_the_disks_pass_unchanged(small_disk):
    small_disk.fill()
    missing = FileNotFoundError(errno.ENOENT, "No such file", str(small_disk.path / "x"))
    assert diagnose(missing, [small_disk.path]) is None        # though the disk is full
    assert diagnose(ValueError("a bug"), [small_disk.path]) is None
    with pytest.raises(KeyError):
        with environment_guard(small_disk.path):
            raise KeyError("a bug")


def test_read_only_and_denied(small_disk, tmp_path):
    folder = small_disk.path / "out"
    small_disk.read_only()
    exc = _raised(lambda: folder.mkdir())
    fault = diagnose(exc, [])
    assert fault.kind == "read-only" and str(folder) in fault.message
    runtime = diagnose(RuntimeError("file write failed"), [folder])   # no errno: the mount
    assert runtime is not None and runtime.kind == "read-only"
    denied = diagnose(PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x")))
    assert denied.kind == "denied" and str(tmp_path / "x") in denied.message


def test_a_fault_inside_a_stage_folder_names_the_stage_folder(small_disk):
    stage = small_disk.path / "cache" / "ds" / "extract-rois" / "0123"
    (stage / "parts").mkdir(parents=True)
    small_disk.fill()
    with pytest.raises(EnvironmentFault) as caught:
        with environment_guard(stage):
            with atomic_path(stage / "parts" / "part-00000.h5") as tmp:
                tmp.write_bytes(b"\0" * 100_000)
    assert caught.value.path == str(stage)


def test_a_write_that_cannot_fit_is_refused_before_it_starts(small_disk):
    require_free_space(small_disk.path, 10_000, "a small file")
    with pytest.raises(EnvironmentFault, match="packing rois.h5: it needs about 2.0 MB"):
        require_free_space(small_disk.path, 2_000_000, "packing rois.h5")
