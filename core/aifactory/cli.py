"""The ``aifactory`` command.

Sub-commands are loaded lazily from the stage that owns them (``LAZY_COMMANDS``), so ``aifactory
--help`` and ``aifactory info`` never import torch. A user mistake (:class:`AIFactoryError`) prints one
line on stderr and exits 2, and so does a machine's refusal a user can fix (no space left, a read-only device,
no permission: :mod:`aifactory.io.oserrors`); ``--events jsonl`` turns progress into JSON lines on stdout for
the plugin.

A stop unwinds the command, so that atomic writers remove their temporary files and the last event is
``done: stopped``: Ctrl-C (SIGINT, exit 130) and SIGTERM (exit 143). SIGTERM is how ``kill``, ``timeout``, batch
schedulers, container runtimes and the plugin's Cancel stop a process; Python's default for it kills the process
where it stands (a prediction stopped so left its hidden temporary scores files, gigabytes at 20000², and no
final event).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import click

from aifactory import __version__
from aifactory.errors import AIFactoryError, Terminated
from aifactory.io import GDAL_CACHE_MB
from aifactory.io.atomic import take_nearly_full_folders
from aifactory.io.oserrors import device_error
from aifactory.progress import BarReporter, JsonlReporter, Reporter, use_reporter

#: command name -> "module:attribute"; each stage adds its own line.
LAZY_COMMANDS: dict[str, str] = {
    "info": "aifactory.io.commands:info",
    "synth": "aifactory.io.commands:synth",
    "demo": "aifactory.demo.commands:demo",
    "run": "aifactory.pipeline.commands:run_command",
    "tasks": "aifactory.pipeline.commands:tasks_command",
    "evaluate": "aifactory.evaluation.commands:evaluate",
    "rps": "aifactory.evaluation.commands:rps",
    "runs": "aifactory.evaluation.commands:runs",
    "predict": "aifactory.prediction.commands:predict",
    "catalog": "aifactory.catalog.commands:catalog",
    "dataset": "aifactory.datasets.commands:dataset",
    "preprocess": "aifactory.preprocess.commands:preprocess",
    "postprocess": "aifactory.postprocess.commands:postprocess",
    "train": "aifactory.training.commands:train",
    "models": "aifactory.models.commands:models",
    "submit": "aifactory.jobs.commands:submit_command",
    "jobs": "aifactory.jobs.commands:jobs_group",
    "bundle": "aifactory.bundle.commands:bundle",
    "registry": "aifactory.bundle.commands:registry",
    "al": "aifactory.active.commands:al",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module_name, attribute = LAZY_COMMANDS[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(module_name), attribute)
            return command
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the sub-command; a SIGTERM leaves as :class:`_TerminatedPastClick`, since click answers any
        ``KeyboardInterrupt`` with a blank line that only closes a terminal's ``^C`` echo."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:  # Ray's ray.get turns a Terminated into a plain KeyboardInterrupt
            if isinstance(exc, Terminated) or _SIGTERM_RECEIVED.is_set():
                raise _TerminatedPastClick from exc
            raise


class _TerminatedPastClick(BaseException):
    """A command stopped by SIGTERM, already unwound (its temporaries removed), on its way to :func:`main`."""


def make_reporter(events: str, quiet: bool = False) -> Reporter:
    if events == "jsonl":
        return JsonlReporter(take_stdout=True)
    if events == "none":
        return Reporter()
    return BarReporter(verbose=not quiet)


def with_events(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--events bar|jsonl|none`` to a command and run it under the matching reporter.

    In jsonl mode a final ``done`` (or ``error``) event closes the stream. GDAL's and libtiff's own messages are
    held back meanwhile (:mod:`aifactory.io.native_messages`): dropped when the command ends in a one-line error or
    a stop, shown once each as warnings otherwise.
    """

    @click.option("--events", type=click.Choice(["bar", "jsonl", "none"]), default="bar", show_default=True,
                  help="How to report progress: bars on stderr, JSON lines on stdout, or nothing.")
    @functools.wraps(func)
    def wrapper(*args: Any, events: str, **kwargs: Any) -> Any:
        from aifactory.io.native_messages import held  # imports rasterio: only once a command runs

        rep = make_reporter(events)
        with use_reporter(rep), held() as native:
            try:
                result = func(*args, **kwargs)
            except AIFactoryError as exc:
                rep.error(str(exc))
                rep.done("failed")
                raise
            except KeyboardInterrupt:
                rep.done("stopped")
                raise
            except Exception as exc:
                if _SIGTERM_RECEIVED.is_set():  # raised while stopping: a loader worker killed by the same signal
                    rep.done("stopped")
                    raise Terminated from exc
                error = device_error(exc)
                if error is None:
                    _show(native.lines(), rep)  # they may help whoever reads the traceback
                    raise
                rep.error(str(error))
                rep.done("failed")
                raise error from exc
            _show(native.lines(), rep)
            rep.done("ok")
            return result

    return wrapper


def _show(native_lines: list[str], rep: Reporter) -> None:
    """GDAL's own lines that a command held back (:mod:`aifactory.io.native_messages`), as warnings."""
    for line in native_lines:
        rep.warning(f"GDAL: {line}")


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="aifactory")
def cli() -> None:
    """AI Factory: datasets, training, prediction, post-processing and evaluation for EO imagery."""


#: set by the SIGTERM handler: the exit code says "terminated" even when a library re-raised the interrupt as its own
_SIGTERM_RECEIVED = threading.Event()


def _terminate(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    # a SIGTERM to the process group (timeout, Slurm, systemd) kills torch's loader workers too: its SIGCHLD
    # handler would raise "DataLoader worker … is killed by signal" in the middle of the clean-up
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _SIGTERM_RECEIVED.set()
    raise Terminated


def _stop_code(exc: BaseException) -> int:
    """Exit code of a stopped command, 128 + the signal's number (click turns Ctrl-C into ``Abort``)."""
    if isinstance(exc, (Terminated, _TerminatedPastClick)) or _SIGTERM_RECEIVED.is_set():
        click.echo("aifactory: terminated", err=True)
        return 128 + signal.SIGTERM
    click.echo(f"aifactory: {'aborted' if isinstance(exc, click.exceptions.Abort) else 'interrupted'}", err=True)
    return 128 + signal.SIGINT


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit code (2 for user errors, never a traceback for them)."""
    # Python runs handlers in the main thread only; a SIGTERM the parent chose to ignore stays ignored
    handle_term = threading.current_thread() is threading.main_thread() and \
        signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    _SIGTERM_RECEIVED.clear()
    if handle_term:
        signal.signal(signal.SIGTERM, _terminate)
    take_nearly_full_folders()  # what an earlier command in this process saw is not this one's
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))  # GDAL's own default grows with the RAM
    try:
        cli.main(args=argv, prog_name="aifactory", standalone_mode=False)
    except AIFactoryError as exc:
        click.echo(f"aifactory: error: {exc}", err=True)
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt, _TerminatedPastClick) as exc:
        return _stop_code(exc)
    except click.ClickException as exc:  # a usage mistake click found: one line too, with where to read more
        command = exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx else None
        hint = f" (see '{command} --help')" if command else ""
        click.echo(f"aifactory: error: {' '.join(exc.format_message().split())}{hint}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except Exception as exc:  # a bug keeps its traceback; a full or read-only device is told in one line
        error = device_error(exc)
        if error is None:
            raise
        click.echo(f"aifactory: error: {error}", err=True)
        return error.exit_code
    finally:
        if handle_term:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
