"""Reading pickled arrays without running code from the file.

Checkpoints in detectron2's `.pkl` format and the `info` entry of MILVLG `.npz` files are
pickles. A pickle can call any importable function while loading, so these files are read
by an unpickler that builds only numpy arrays, numpy scalars and plain containers, and
refuses every other global by name.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, BinaryIO

import numpy as np

from ..errors import InputError

def _allowed_globals() -> dict[tuple[str, str], Any]:
    """(module, name) -> object, for the globals a pickle of arrays and containers uses."""
    import codecs
    import collections

    core = np._core if hasattr(np, "_core") else np.core
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("collections", "OrderedDict"): collections.OrderedDict,
               # Python 2 pickles store array bytes as latin-1 text, rebuilt by codecs.encode.
               ("_codecs", "encode"): codecs.encode}
    for package in ("numpy.core", "numpy._core"):
        allowed[(package + ".multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(package + ".multiarray", "scalar")] = core.multiarray.scalar
        # Protocol-5 pickles rebuild arrays from a raw buffer.
        allowed[(package + ".numeric", "_frombuffer")] = core.numeric._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    _allowed: dict | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        found = RestrictedUnpickler._allowed.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"refusing to load '{module}.{name}': only numpy arrays and plain containers "
                "are allowed in this file")
        return found


def load_restricted(handle: BinaryIO, *, source: str) -> Any:
    """Unpickle `handle` allowing only arrays and containers; errors name `source`."""
    try:
        return RestrictedUnpickler(handle, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise InputError(str(exc), file=source,
                         hint="this file holds more than arrays; convert it to a plain array "
                              "format (npz without objects, safetensors, a state dict)") from exc
    except (EOFError, ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"not a readable pickle of arrays: {exc}", file=source) from exc


def loads_restricted(data: bytes, *, source: str) -> Any:
    return load_restricted(io.BytesIO(data), source=source)


def read_npz_entry(npz: np.lib.npyio.NpzFile, key: str, *, source: str) -> Any:
    """One entry of an opened npz (allow_pickle=False); object arrays are unpickled with the
    restricted unpickler instead of numpy's unrestricted one."""
    try:
        return npz[key]
    except ValueError:
        pass  # an object array: numpy refuses it without allow_pickle
    with npz.zip.open(key + ".npy") as member:
        major, _minor = np.lib.format.read_magic(member)
        read_header = (np.lib.format.read_array_header_1_0 if major == 1
                       else np.lib.format.read_array_header_2_0)
        shape, _fortran, dtype = read_header(member)
        if dtype.hasobject:
            payload = load_restricted(member, source=f"{source}:{key}")
            return np.asarray(payload, dtype=object).reshape(shape) if shape else payload
    raise InputError(f"cannot read entry '{key}'", file=source)
