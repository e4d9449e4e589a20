"""A per-batch figure's series over a recording, read by its declaration.

The app's replay history and the health checks' history of a recording both come from here, so
a recorded batch is drawn and judged from the same values a live run had.
"""

from __future__ import annotations

import numpy as np

from energy_flow.trace.figures import BatchFigure, Dims
from energy_flow.trace.recording.reader import Recording


def recorded_series(rec: Recording, figure: BatchFigure) -> np.ndarray:
    """``[N, *shape]`` float64 over the recording's complete batches; NaN where the file does not
    hold the figure (a column newer than its schema, or a figure never recorded)."""
    planes = rec.dataset("batches/plane_z").shape[1]
    shape = (rec.num_batches, *Dims(planes=planes, bins=0).shape(figure.trailing))
    try:
        if figure.recorded:
            values = np.asarray(rec.batch_column(figure.key), dtype=np.float64)
            if figure.unknown is not None:
                values = np.where(values == figure.unknown, np.nan, values)
        elif figure.from_step_total:
            values = rec.step_totals(figure.from_step_total)
        elif figure.from_step_start:
            values = rec.step_starts(figure.from_step_start)
        else:
            return np.full(shape, np.nan)
    except KeyError:
        if figure.recorded and rec.schema_version < figure.since_schema:
            return np.full(shape, np.nan)
        raise
    return values.reshape(shape)
