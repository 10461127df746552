"""AI Factory: industrial deep learning for satellite and aerial imagery.

The package is headless: it never imports Qt or QGIS. Stages live in sub-packages named after the
pipeline step they implement (io, catalog, preprocess, datasets, models, training, prediction,
postprocess, evaluation, active, pipeline, jobs, tracking, bundle).
"""

__version__ = "0.1.0"
