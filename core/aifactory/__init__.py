"""AI Factory: industrial deep learning for satellite and aerial imagery.

The package is headless: it never imports Qt or QGIS. Stages live in sub-packages named after the
pipeline step they implement (io, catalog, preprocess, datasets, models, training, prediction,
postprocess, evaluation, active, pipeline, jobs, tracking, bundle).
"""

__version__ = "0.1.0"

import warnings as _warnings

# Debian's matplotlib (pulled in by QGIS, visible through --system-site-packages) and the venv's share the
# mpl_toolkits namespace; the 3D projection we never use then fails to register and warns on every import.
_warnings.filterwarnings("ignore", message="Unable to import Axes3D")
