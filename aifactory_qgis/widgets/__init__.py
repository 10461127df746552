"""Reusable widgets (charts) of the docks."""
