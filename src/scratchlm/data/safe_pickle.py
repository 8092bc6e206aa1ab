"""A restricted unpickler for trajectory files from strangers: tensors, NumPy arrays and plain containers.

`pickle.load` calls whatever callables a file names, so a hostile file runs arbitrary code. This
unpickler resolves only the globals the course's format needs and refuses everything else before
anything is called. What a `pickle.dump` of a dict of torch tensors contains (`pickletools.dis` on the
course's files):

- `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`, with
  `collections.OrderedDict()` as the (empty) hooks;
- `torch.storage._load_from_bytes(blob)`: the storage, as a nested legacy `torch.save` stream. torch's
  own function would `torch.load(weights_only=False)` it (arbitrary code again), so we parse it here: five
  small pickles (magic number, protocol 1001, system info, the storage record as a persistent id, the key
  list) followed by each storage's element count (int64) and raw bytes. Its only global is the storage
  type (`torch.FloatStorage`, `torch.LongStorage`, ...), used as a dtype tag and never called.

NumPy arrays need `numpy.core.multiarray._reconstruct` (or `numpy._core...` in NumPy 2), `numpy.ndarray` (a tag
`_reconstruct` checks, refused if called),
`numpy.dtype`, `numpy.core.numeric._frombuffer` (protocol 5), `numpy.core.multiarray.scalar` and, in
protocol-2 files, `_codecs.encode` for bytes. Dicts, lists, tuples, numbers and strings need no globals.
Every admitted callable is a wrapper that checks its arguments (no object arrays, tensor views inside
their storage), and tensors are always rebuilt on the CPU.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
from typing import IO, Any

import numpy as np
import torch

from scratchlm.errors import DataError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class UnsafePickleError(DataError):
    """The pickle names a callable outside the admitted set; nothing from it was executed."""


class _Storage:
    """A deserialized storage: a flat CPU tensor of its dtype (what `_rebuild_tensor_v2` receives)."""

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat


class _StorageType:
    """The tag a legacy storage record carries in place of a torch storage class."""

    def __init__(self, name: str) -> None:
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(
    storage: _Storage,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    if not isinstance(storage, _Storage):
        raise UnsafePickleError("a tensor in the pickle is not backed by a storage; the file is not a tensor pickle.")
    ints = (storage_offset, *size, *stride)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints) or len(size) != len(stride):
        raise DataError(f"a tensor in the pickle has an invalid layout (size {size}, stride {stride}).")
    if backward_hooks or metadata:
        raise UnsafePickleError("a tensor in the pickle carries hooks or metadata, which trajectory files never do.")
    numel = storage.flat.numel()
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) if all(size) else -1
    if last >= numel:
        raise DataError(f"a tensor in the pickle reads past its storage ({last} >= {numel} elements).")
    # A stride-0 (broadcast) view of a tiny storage would expand to any size on .contiguous(): a pickle bomb.
    if math.prod(size) > numel:
        raise UnsafePickleError(
            f"a tensor in the pickle claims {math.prod(size)} elements over a storage of {numel} (a broadcast "
            "view); trajectory files never hold those."
        )
    return torch.as_strided(storage.flat, size, stride, storage_offset).contiguous()


def _check_plain_dtype(dtype: Any) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise UnsafePickleError("the pickle holds a NumPy array of Python objects; only numeric arrays are allowed.")
    return dtype


def _dtype(*args: Any) -> np.dtype:
    # Arrays carry their dtype as a pickled np.dtype; refusing object dtypes here, where every dtype in
    # the file is created, keeps object arrays out even when the array itself is rebuilt by __setstate__.
    return _check_plain_dtype(np.dtype(*args))


class _NdarrayTag:
    """What `numpy.ndarray` resolves to: NumPy's pickles only pass it to `_reconstruct`. Called, as a crafted
    file can ask, np.ndarray(shape) would hand back uninitialized memory of any size the file claims."""

    def __repr__(self) -> str:
        return "numpy.ndarray"

    def __call__(self, *args: Any) -> None:
        raise UnsafePickleError(
            "the pickle calls numpy.ndarray() directly, which allocates uninitialized memory of whatever shape "
            "it names (NumPy never writes that); refusing it."
        )


_NDARRAY = _NdarrayTag()


def _no_size(kind: type) -> Any:
    """bytes / bytearray as pickles call them (empty, from bytes, or from a latin-1 str); bytes(n) would
    allocate n zero bytes a tiny file never holds."""

    def build(*args: Any) -> Any:
        if args and not isinstance(args[0], (bytes, bytearray, str)):
            raise UnsafePickleError(
                f"the pickle calls {kind.__name__}() on {type(args[0]).__name__}, which only allocates memory "
                "(NumPy and torch never write that); refusing it."
            )
        return kind(*args)

    return build


def _reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if subtype is not _NDARRAY:
        raise UnsafePickleError("the pickle rebuilds an ndarray subclass; only plain NumPy arrays are allowed.")
    # NumPy pickles an empty placeholder here and sets the real shape and data in __setstate__; a larger
    # shape would allocate memory the file does not hold.
    if not isinstance(shape, tuple) or math.prod(shape) != 0:
        raise UnsafePickleError(f"the pickle pre-allocates an array of shape {shape!r}; NumPy never writes that.")
    return _MULTIARRAY._reconstruct(np.ndarray, shape, _check_plain_dtype(dtype_code))


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    return _NUMERIC._frombuffer(buffer, _check_plain_dtype(dtype), shape, order)


def _scalar(dtype: Any, payload: Any = None) -> Any:
    return _MULTIARRAY.scalar(_check_plain_dtype(dtype), payload)


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1'); nothing else is needed.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("the pickle calls _codecs.encode other than to spell bytes; refusing it.")
    return text.encode("latin1")


try:  # NumPy 2 moved numpy.core to numpy._core; files from either era name their own
    from numpy._core import multiarray as _MULTIARRAY
    from numpy._core import numeric as _NUMERIC
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _MULTIARRAY
    from numpy.core import numeric as _NUMERIC

_ADMITTED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1_encode,
}
for _builtins in ("builtins", "__builtin__"):  # protocol 2 writes the Python 2 name
    _ADMITTED[(_builtins, "bytes")] = _no_size(bytes)
    _ADMITTED[(_builtins, "bytearray")] = _no_size(bytearray)
for _core in ("numpy.core", "numpy._core"):
    _ADMITTED[(f"{_core}.multiarray", "_reconstruct")] = _reconstruct
    _ADMITTED[(f"{_core}.multiarray", "scalar")] = _scalar
    _ADMITTED[(f"{_core}.numeric", "_frombuffer")] = _frombuffer


class _TrajectoryUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return lambda blob: _load_legacy_storage(blob, self.source)
        admitted = _ADMITTED.get((module, name))
        if admitted is None:
            raise UnsafePickleError(
                f"{self.source}: refusing to load `{module}.{name}`, which a trajectory file never needs (only "
                "tensors, NumPy arrays, dicts, lists, numbers and strings are allowed); regenerate the file with "
                "`scratchlm data trajectories`."
            )
        return admitted


class _LegacyStorageUnpickler(pickle.Unpickler):
    """Reads the small pickles inside a legacy torch.save stream; its only globals are storage-type tags."""

    def __init__(self, file: IO[bytes], source: str) -> None:
        super().__init__(file)
        self.source = source
        self.records: dict[str, tuple[torch.dtype, int]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(f"{self.source}: refusing to load `{module}.{name}` inside a tensor storage record.")

    def persistent_load(self, pid: Any) -> str:
        # ('storage', type tag, key, location, numel[, view metadata]); the location is ignored: we load to CPU.
        valid = (
            isinstance(pid, tuple)
            and len(pid) in (5, 6)
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[2], str)
            and isinstance(pid[4], int)
            and pid[4] >= 0
            and (len(pid) == 5 or pid[5] is None)
        )
        if not valid:
            raise DataError(f"{self.source}: a tensor storage record is malformed; the file is corrupt.")
        self.records[pid[2]] = (pid[1].dtype, pid[4])
        return pid[2]


def _load_legacy_storage(blob: Any, source: str) -> _Storage:
    if not isinstance(blob, bytes):
        raise DataError(f"{source}: a tensor storage is not a byte string; the file is corrupt.")
    stream = io.BytesIO(blob)
    unpickler = _LegacyStorageUnpickler(stream, source)
    magic, protocol, sys_info = unpickler.load(), unpickler.load(), unpickler.load()
    if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL or not isinstance(sys_info, dict):
        raise DataError(f"{source}: a tensor storage has an unknown serialization header; the file is corrupt.")
    if not sys_info.get("little_endian", False):
        raise DataError(
            f"{source}: the tensors were saved on a big-endian machine; re-save them on a little-endian one."
        )
    key = unpickler.load()
    keys = unpickler.load()
    if keys != [key] or key not in unpickler.records:
        raise DataError(f"{source}: a tensor storage lists unexpected records; the file is corrupt.")
    dtype, numel = unpickler.records[key]
    header = stream.read(8)
    element_size = torch.empty((), dtype=dtype).element_size()
    payload = stream.read(numel * element_size)
    if len(header) != 8 or struct.unpack("<q", header)[0] != numel or len(payload) != numel * element_size:
        raise DataError(f"{source}: a tensor storage is truncated; the file is corrupt or incomplete.")
    if stream.read(1):
        raise DataError(f"{source}: a tensor storage has trailing bytes; the file is corrupt.")
    flat = torch.frombuffer(bytearray(payload), dtype=dtype) if numel else torch.empty(0, dtype=dtype)
    return _Storage(flat)


def safe_load(data: bytes | IO[bytes], source: str = "pickle") -> Any:
    """Unpickle `data` (bytes or a binary file) admitting only tensors, NumPy arrays and plain containers.

    Raises UnsafePickleError (before calling anything) for any other callable, DataError for a damaged
    file. `source` (e.g. the path) prefixes error messages.
    """
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        return _TrajectoryUnpickler(stream, source).load()
    except UnsafePickleError as exc:
        if str(exc).startswith(f"{source}: "):
            raise
        raise UnsafePickleError(f"{source}: {exc}") from None  # the checks outside the unpickler know no path
    except DataError:
        raise
    except MemoryError:
        raise DataError(
            f"{source}: the pickle asks for more memory than this machine has; the file is damaged or crafted."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise DataError(
            f"{source}: not a readable trajectory pickle ({exc}); the file is damaged or not a pickle."
        ) from None
