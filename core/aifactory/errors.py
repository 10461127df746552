"""User-facing errors.

Anything a user can cause (a missing file, a bad YAML key, a raster with the wrong bands) raises a
subclass of :class:`AIFactoryError`. The CLI catches it, prints its one-line message on stderr and
exits with code 2; programming errors keep their traceback.
"""

from __future__ import annotations


class AIFactoryError(Exception):
    """An error caused by the user's input; its message is one line saying what and where."""

    exit_code = 2


class ConfigError(AIFactoryError):
    """A configuration file or parameter set that does not validate."""


class InputError(AIFactoryError):
    """An input file (raster, vector, model, dataset) that cannot be used."""


class Terminated(KeyboardInterrupt):
    """SIGTERM asked the process to stop (raised by the CLI's handler, :mod:`aifactory.cli`): it unwinds like Ctrl-C,
    so that atomic writers remove their temporary files."""


class DeviceError(AIFactoryError):
    """The machine refused a read or a write the user can make possible: no space left, a read-only device, no
    permission (built from the library's own error by :func:`aifactory.io.oserrors.device_error`)."""
