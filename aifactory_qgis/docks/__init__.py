"""The six docks of the plugin; each is a QgsDockWidget built in code."""
