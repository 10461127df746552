"""Datasets: chip export from rasters and vector labels, the on-disk dataset format, torch datasets."""
