"""The 3D lattice view: :class:`~app.view.lattice_view.LatticeView` and its parts, one concept
per module (sampling, geometry, step visuals, flow layers, lattice frame, overlay, picking,
highlight, selection, hover); the widget's module docstring maps them."""
