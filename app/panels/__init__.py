"""pyqtgraph panels, one module each. Every panel has ``set_snapshot`` and ``set_step``;
``reference_curves`` draws the runs opened for comparison into the training panel."""
