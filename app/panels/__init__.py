"""pyqtgraph panels, one module each. Every panel has ``set_snapshot`` and ``set_step``."""
