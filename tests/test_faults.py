"""How a failed write is told to be the machine's fault, on a small real tmpfs: the errors
that numpy, torch and Python itself raise on a full disk, and the ones that are not."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch

from disk_faults import LockedFolder, mount_small_disk
from mrhp_prep.atomic import atomic_path
from mrhp_prep.errors import EnvironmentFault, InputError
from mrhp_prep.faults import (OutputFolder, diagnose, environment_guard, require_free_space,
                              unreadable_input)


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
    output = tmp_path / "out"
    refused = PermissionError(errno.EACCES, "Permission denied", str(output / ".x.part"))
    denied = diagnose(refused, [OutputFolder(output, "--out")])
    assert denied.kind == "denied" and f"permission denied: {output}" in denied.message
    assert "another --out" in denied.message


def test_a_file_this_user_may_not_read_is_an_input_error_not_the_disks(tmp_path):
    """Permission is the machine's fault only where the output goes: an input file that this
    user may not read (a --vectors file, say) is named as the input it is, exit 3."""
    output, vectors = tmp_path / "out", tmp_path / "vectors.txt"
    refused = PermissionError(errno.EACCES, "Permission denied", str(vectors))
    assert diagnose(refused, [OutputFolder(output, "--out")]) is None
    assert diagnose(refused) is None
    error = unreadable_input(refused)
    assert isinstance(error, InputError) and error.exit_code == 3
    assert error.file == str(vectors) and "permission denied" in error.message
    on_the_way = PermissionError(errno.EACCES, "Permission denied", str(tmp_path))
    assert diagnose(on_the_way, [output]).kind == "denied"      # making the output's parents
    assert diagnose(PermissionError(errno.EACCES, "Permission denied"), [output]).kind == "denied"


def test_the_advice_names_the_option_that_chose_the_folder(small_disk):
    small_disk.read_only()
    root = small_disk.path / "images"
    with pytest.raises(EnvironmentFault) as caught:
        with environment_guard(OutputFolder(root, "--images-root")):
            with atomic_path(root / "train" / "pic_0.jpg") as tmp:
                tmp.write_bytes(b"x")
    assert caught.value.path == str(root)
    assert "choose another --images-root" in caught.value.message
    assert "--cache-dir" not in caught.value.message
    with pytest.raises(EnvironmentFault) as unnamed:      # an option nobody told: none named
        with atomic_path(root / "x.json") as tmp:
            tmp.write_bytes(b"x")
    assert "--" not in unnamed.value.message


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


def test_a_stage_folder_on_a_read_only_disk_is_named_not_its_lock_file(small_disk):
    """An unfinished run's folder (a resume) that has become read-only: taking its lock is the
    first write, and the fault names the folder and --out, not `<folder>/.lock`."""
    from mrhp_prep.cache import open_stage

    def open_run():
        return open_stage("demo", dataset="ds", settings={}, inputs={}, format_version=1,
                          out=small_disk.path / "stage")

    open_run().release()                     # started, then killed
    stage = small_disk.path / "stage"
    small_disk.read_only()
    locked = isinstance(small_disk, LockedFolder)   # chmod binds the folder itself only
    if locked:
        stage.chmod(0o555)
    try:
        with pytest.raises(EnvironmentFault) as caught:
            open_run()
    finally:
        if locked:
            stage.chmod(0o755)
    assert caught.value.path == str(stage) and small_disk.read_only_words in str(caught.value)
    assert ".lock" not in caught.value.message and "another --out" in caught.value.message
