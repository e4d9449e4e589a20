"""Where snapshots and runs come from: the training worker (live), a recording (replay), the
text bridge's reading of a batch, and reference runs opened for comparison. No widgets here."""
