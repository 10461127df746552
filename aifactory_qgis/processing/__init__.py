"""The Processing provider: the worker's main commands as algorithms usable in models and qgis_process."""
