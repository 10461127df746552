"""Raster and vector I/O shared by every stage: windows, masks, CRS alignment, atomic writes, COGs."""
