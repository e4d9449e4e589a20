"""energy_flow: a 3D-lattice energy-flow network, its trainer, teacher data and telemetry.

Pure torch + numpy: nothing here imports a GUI toolkit, so the library runs headless, in tests
and on GPU servers. The desktop app (``app/``) is built on top of it.
"""

__version__ = "0.1.0"
