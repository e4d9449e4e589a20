"""Pieces of the 3D lattice view that hold one concept each (picking, lineage highlighting)."""
