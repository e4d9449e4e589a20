"""RowLayout: where each figure sits in a packed row, computed from the declarations.

The tracer packs one propagation step's figures into one device row, the trainer one batch's
signals into one host transfer; both unpack the host copy here. The offsets are derived from
the declarations' order and shapes, so no position is written by hand anywhere and a wrong
width is an error naming the figure, not a shifted column.
"""

from __future__ import annotations

from math import prod
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from energy_flow.trace.figures.declarations import Dims, Figure


class RowLayout:
    """The packed row of ``figures`` for the sizes ``dims``."""

    def __init__(self, figures: Iterable[Figure], dims: Dims):
        self.figures: tuple[Figure, ...] = tuple(figures)
        self.dims = dims
        self.shapes = {f.key: dims.shape(f.trailing) for f in self.figures}
        self.slices: dict[str, slice] = {}
        at = 0
        for f in self.figures:
            width = prod(self.shapes[f.key])
            self.slices[f.key] = slice(at, at + width)
            at += width
        self.width = at

    def parts(self, values: Mapping[str, Any]) -> list[Any]:
        """The values (device tensors or arrays) flattened, in row order, widths checked.

        The caller concatenates them (``torch.cat``): this module stays torch-free.
        """
        missing = [f.key for f in self.figures if f.key not in values]
        extra = sorted(set(values) - set(self.slices))
        if missing or extra:
            raise KeyError(f"packed row: missing figures {missing}, undeclared {extra}")
        out = []
        for f in self.figures:
            flat = values[f.key].reshape(-1)
            expected = self.slices[f.key].stop - self.slices[f.key].start
            if flat.shape[0] != expected:
                raise ValueError(f"figure {f.key!r}: {flat.shape[0]} values, its declaration "
                                 f"{f.trailing or 'scalar'!r} needs {expected}")
            out.append(flat)
        return out

    def unpack(self, table: np.ndarray) -> dict[str, np.ndarray]:
        """A host table ``[rows, width]`` (or one row ``[width]``) as ``{key: [rows, *shape]}``,
        each in its declared dtype (integers are rounded: they crossed as float64)."""
        table = np.asarray(table)
        single = table.ndim == 1
        rows = table[None] if single else table
        if rows.shape[1] != self.width:
            raise ValueError(f"packed row has {rows.shape[1]} values, the layout {self.width}")
        out = {}
        for f in self.figures:
            block = rows[:, self.slices[f.key]].reshape(rows.shape[0], *self.shapes[f.key])
            dtype = np.dtype(f.dtype)
            block = np.rint(block).astype(dtype) if dtype.kind in "iu" else block.astype(dtype)
            out[f.key] = block[0] if single else block
        return out

    def keys(self) -> Sequence[str]:
        return tuple(f.key for f in self.figures)
