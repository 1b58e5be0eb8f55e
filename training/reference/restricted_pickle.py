"""Training layer (reference): stand-ins that let `torch.load(weights_only=True)` read the authors' Lightning
checkpoints without their code.

Their `hyper_parameters['metadata_loader']` is a pickled `dataloading.metadata.MetadataLoader` holding pandas
DataFrames (`df_raw`: the track order and raw metadata; `df`: an obsolete processed copy). Unpickling it for real
would import their package and pandas and run whatever the pickle names. Instead, every global the pickle may
name is mapped to a small class or function here (`ALLOW_LIST`, registered under the pickled names), which
rebuilds a DataFrame as a `Frame` — `{index: [row labels], columns: {name: [python values]}}` — using numpy only.
Anything not on the list is refused by torch's weights-only unpickler before it is called.

What the pickles look like (read with `pickletools` on real pandas/numpy pickles, protocol 2 as torch.save writes):
- DataFrame: NEWOBJ + BUILD with `{'_mgr': <manager>, '_typ': 'dataframe', ...}`.
- pandas ≥ 2: the manager is `BlockManager(blocks, axes)` (REDUCE), each block
  `_unpickle_block(values, placement, ndim)` with `placement` a slice or an index array.
- pandas 1.x: the manager is NEWOBJ + BUILD with `(axes, values, items, {'0.14.1': {'axes', 'blocks':
  [{'values', 'mgr_locs'}]}})`.
- axes: `_new_Index(Index | RangeIndex, {'data' | 'start','stop','step', 'name'})`; axes[0] holds the column
  names, axes[1] the row labels; a block's values are [columns in block, rows].
- ndarray: `_reconstruct(ndarray, (0,), b'b')` + BUILD `(1, shape, dtype, is_fortran, raw)`, raw being bytes
  (`_codecs.encode(str, 'latin1')` under protocol 2) or, for object arrays, a list of the elements.
- dtype: `dtype('f8', False, True)` + BUILD `(3, byteorder, …)`; numpy scalars: `scalar(dtype, raw bytes)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Frame:
    """A pandas DataFrame's content: row labels and, per column (in frame order), one python value per row."""

    index: list[Any]
    columns: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)


class PickleContentError(ValueError):
    """The pickle uses an allowed name in a way these stand-ins do not understand."""


# ---- numpy --------------------------------------------------------------------------------------------------

class DTypeStandIn:
    """`numpy.dtype(code, align, copy)` followed by BUILD with `(version, byteorder, …)`."""

    def __init__(self, code: Any, align: bool = False, copy: bool = True):
        if isinstance(code, bytes):
            code = code.decode("ascii")
        if not isinstance(code, str):
            raise PickleContentError(f"numpy dtype with a non-string code {type(code).__name__}")
        self.code, self.byteorder = code, "="

    def __setstate__(self, state: tuple) -> None:
        if isinstance(state, tuple) and len(state) > 1 and isinstance(state[1], str):
            self.byteorder = state[1]
        if isinstance(state, tuple) and len(state) > 3 and state[3] is not None:
            raise PickleContentError(f"numpy structured dtype {self.code!r} is not supported")

    def numpy(self) -> np.dtype:
        if self.code.startswith("O"):
            return np.dtype(object)
        if self.code.startswith(("M8", "m8", "V")):
            raise PickleContentError(f"numpy dtype {self.code!r} is not supported (datetime/void)")
        order = self.byteorder if self.byteorder in "<>" else ""
        try:
            return np.dtype(order + self.code)
        except TypeError as err:
            raise PickleContentError(f"unknown numpy dtype {self.code!r}") from err


class ArrayStandIn:
    """`numpy.ndarray` rebuilt from its BUILD state into a real (owned) numpy array at `.array`."""

    array: np.ndarray

    def __setstate__(self, state: tuple) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise PickleContentError("numpy array state is not (version, shape, dtype, is_fortran, data)")
        _version, shape, dtype, fortran, raw = state
        if not isinstance(dtype, DTypeStandIn):
            raise PickleContentError("numpy array without a dtype")
        dt = dtype.numpy()
        order = "F" if fortran else "C"
        count = int(np.prod(shape)) if len(shape) else 1
        if dt == np.dtype(object):
            if not isinstance(raw, list) or len(raw) != count:
                raise PickleContentError("object array data is not a list of its elements")
            flat = np.empty(count, dtype=object)
            for i, item in enumerate(raw):
                flat[i] = unwrap(item)
            self.array = flat.reshape(shape, order=order)
        else:
            if not isinstance(raw, (bytes, bytearray)) or len(raw) != count * dt.itemsize:
                raise PickleContentError(f"numpy {dt} array data has the wrong size")
            self.array = np.frombuffer(bytes(raw), dtype=dt).reshape(shape, order=order).copy()


def reconstruct(subtype: Any, shape: Any, typecode: Any) -> ArrayStandIn:
    """`numpy.core.multiarray._reconstruct`: an empty array, filled by the following BUILD."""
    if subtype is not ArrayStandIn:
        raise PickleContentError("numpy _reconstruct of something other than ndarray")
    return ArrayStandIn.__new__(ArrayStandIn)


def scalar(dtype: DTypeStandIn, raw: Any = None) -> Any:
    """`numpy.core.multiarray.scalar`: a numpy scalar as the python value it holds."""
    dt = dtype.numpy()
    if dt == np.dtype(object):
        return unwrap(raw)
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != dt.itemsize:
        raise PickleContentError(f"numpy {dt} scalar data has the wrong size")
    return np.frombuffer(bytes(raw), dtype=dt)[0].item()


def unwrap(value: Any) -> Any:
    """Stand-in objects → what they stand for (numpy array, Frame, list of index labels); others unchanged."""
    if isinstance(value, ArrayStandIn):
        return value.array
    if isinstance(value, DataFrameStandIn):
        return value.frame
    if isinstance(value, IndexStandIn):
        return value.labels
    return value


def _values(value: Any) -> list[Any]:
    """A column of values (numpy array or list) as python values; floats stay floats, NaN stays NaN."""
    value = unwrap(value)
    if isinstance(value, np.ndarray):
        return [unwrap(v) for v in value.tolist()]
    if isinstance(value, (list, tuple, range)):
        return list(value)
    raise PickleContentError(f"expected an array of values, got {type(value).__name__}")


# ---- pandas -------------------------------------------------------------------------------------------------

class IndexStandIn:
    """`pandas.Index` / `RangeIndex` / pandas 1.x `Int64Index`…: only the labels are kept."""

    labels: list[Any]


class RangeIndexStandIn(IndexStandIn):
    pass


def new_index(cls: Any, data: Any) -> IndexStandIn:
    """`pandas.core.indexes.base._new_Index(cls, attributes)`."""
    if not (isinstance(cls, type) and issubclass(cls, IndexStandIn)) or not isinstance(data, dict):
        raise PickleContentError("pandas _new_Index with an unexpected class or state")
    index = cls.__new__(cls)
    if cls is RangeIndexStandIn:
        index.labels = list(range(int(data.get("start", 0)), int(data["stop"]), int(data.get("step", 1))))
    else:
        index.labels = _values(data["data"])
    return index


@dataclass
class BlockStandIn:
    values: Any
    placement: Any
    ndim: int = 2


def unpickle_block(values: Any, placement: Any, ndim: int = 2) -> BlockStandIn:
    """`pandas._libs.internals._unpickle_block(values, placement, ndim)` (pandas ≥ 2)."""
    return BlockStandIn(values, placement, int(ndim))


def _locations(placement: Any, n_items: int) -> list[int]:
    placement = unwrap(placement)
    if isinstance(placement, slice):
        return list(range(*placement.indices(n_items)))
    if isinstance(placement, np.ndarray):
        return [int(i) for i in placement.reshape(-1)]
    if isinstance(placement, (list, tuple)):
        return [int(i) for i in placement]
    raise PickleContentError(f"pandas block placement of type {type(placement).__name__}")


class BlockManagerStandIn:
    """`BlockManager(blocks, axes)` (pandas ≥ 2, REDUCE) or NEWOBJ + BUILD with the 1.x state tuple."""

    def __init__(self, blocks: Any = (), axes: Any = ()):
        self.axes = [unwrap(a) for a in axes]
        self.blocks = [(b.values, b.placement) for b in blocks if self._is_block(b)]

    @staticmethod
    def _is_block(block: Any) -> bool:
        if not isinstance(block, BlockStandIn):
            raise PickleContentError(f"pandas block of type {type(block).__name__}")
        return True

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 3:
            raise PickleContentError("pandas BlockManager state is not the 1.x (axes, values, items, …) tuple")
        extra = state[3] if len(state) > 3 and isinstance(state[3], dict) else {}
        if "0.14.1" in extra:
            self.axes = [unwrap(a) for a in extra["0.14.1"]["axes"]]
            self.blocks = [(b["values"], b["mgr_locs"]) for b in extra["0.14.1"]["blocks"]]
            return
        # The oldest layout: block items are column names, not positions.
        self.axes = [unwrap(a) for a in state[0]]
        names = self.axes[0]
        self.blocks = [(values, [names.index(n) for n in unwrap(items)]) for values, items in zip(state[1], state[2])]

    def frame(self) -> Frame:
        if len(self.axes) == 1:  # a Series' SingleBlockManager: one column named None
            values, _ = self.blocks[0]
            return Frame(index=list(self.axes[0]), columns={None: _values(values)})  # type: ignore[dict-item]
        names, index = list(self.axes[0]), list(self.axes[1])
        if len(set(map(str, names))) != len(names):
            raise PickleContentError("DataFrame with duplicate column names")
        columns: dict[Any, list[Any]] = {}
        for values, placement in self.blocks:
            array = unwrap(values)
            if not isinstance(array, np.ndarray):
                raise PickleContentError(f"pandas block values of type {type(array).__name__}")
            rows = array.reshape(1, -1) if array.ndim == 1 else array
            for loc, row in zip(_locations(placement, len(names)), rows):
                columns[names[loc]] = _values(row)
        return Frame(index=index, columns={n: columns[n] for n in names if n in columns})


class DataFrameStandIn:
    """`pandas.DataFrame` (and `Series`): BUILD with `{'_mgr': manager, …}` → `.frame`."""

    frame: Frame

    def __setstate__(self, state: Any) -> None:
        manager = state.get("_mgr", state.get("_data")) if isinstance(state, dict) else None
        if not isinstance(manager, BlockManagerStandIn):
            raise PickleContentError("pandas DataFrame state without a BlockManager")
        self.frame = manager.frame()


class MetadataLoader:
    """Stand-in for their `dataloading.metadata.MetadataLoader`: BUILD sets `df_raw`, `df`, `cols_*` as attributes."""

    df_raw: Any


# Every global a MetadataLoader pickle may name, with the pickled (module.qualname) spelling; numpy 2 moved
# `numpy.core` to `numpy._core`, pandas 1.x had numeric index classes of its own.
ALLOW_LIST: list[tuple[Any, str]] = [
    (MetadataLoader, "dataloading.metadata.MetadataLoader"),
    (DataFrameStandIn, "pandas.core.frame.DataFrame"),
    (DataFrameStandIn, "pandas.core.series.Series"),
    (BlockManagerStandIn, "pandas.core.internals.managers.BlockManager"),
    (BlockManagerStandIn, "pandas.core.internals.managers.SingleBlockManager"),
    (unpickle_block, "pandas._libs.internals._unpickle_block"),
    (new_index, "pandas.core.indexes.base._new_Index"),
    (IndexStandIn, "pandas.core.indexes.base.Index"),
    (RangeIndexStandIn, "pandas.core.indexes.range.RangeIndex"),
    (IndexStandIn, "pandas.core.indexes.numeric.Int64Index"),
    (IndexStandIn, "pandas.core.indexes.numeric.UInt64Index"),
    (IndexStandIn, "pandas.core.indexes.numeric.Float64Index"),
    (slice, "builtins.slice"),
    (reconstruct, "numpy.core.multiarray._reconstruct"),
    (reconstruct, "numpy._core.multiarray._reconstruct"),
    (scalar, "numpy.core.multiarray.scalar"),
    (scalar, "numpy._core.multiarray.scalar"),
    (ArrayStandIn, "numpy.ndarray"),
    (DTypeStandIn, "numpy.dtype"),
]
