"""GDAL's and libtiff's own stderr lines are held while a command runs: dropped after a one-line error or a stop,
shown once each (as warnings) after a success."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from aifactory.io.bundled_libs import bundled_library

pytestmark = pytest.mark.skipif(bundled_library("libgdal") is None, reason="rasterio runs on its own GDAL build")

# a command that makes GDAL and libtiff speak the way a writer thread does, then ends as asked
COMMAND = textwrap.dedent("""
    import os, signal, sys, threading
    import click
    from aifactory.cli import cli, main, with_events
    from aifactory.errors import AIFactoryError
    from aifactory.io.bundled_libs import bundled_library

    def speak():
        gdal, tiff = bundled_library("libgdal"), bundled_library("libtiff")
        for _ in range(3):
            gdal.CPLError(3, 1, b"TIFFWriteDirectoryTagData:IO error writing tag data")
        gdal.CPLError(2, 1, b"a warning from a worker")
        bundled_library("libgdal", "pyogrio").CPLError(3, 1, b"failed to execute insert : database or disk is full")
        tiff.TIFFErrorExt(None, b"_tiffSeekProc", b"%s", b"No space left on device")

    @cli.command("speak")
    @click.argument("ending")
    @with_events
    def speak_command(ending):
        worker = threading.Thread(target=speak)  # no rasterio.Env there: GDAL's default handler
        worker.start()
        worker.join()
        if ending == "error":
            raise AIFactoryError("the one line")
        if ending == "stop":
            os.kill(os.getpid(), signal.SIGTERM)
        if ending == "bug":
            raise ValueError("a bug")

    sys.exit(main(["speak", *sys.argv[1:]]))
""")


def run_snippet(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """In a process of its own: GDAL chooses where it logs at its first message, for the process's life."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_a_one_line_error_is_the_only_line():
    done = run_snippet(COMMAND, "error", "--events", "jsonl")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["aifactory: error: the one line"]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [event["event"] for event in events] == ["error", "done"]


def test_a_stop_drops_them():
    done = run_snippet(COMMAND, "stop", "--events", "bar")
    assert done.returncode == 143
    assert done.stderr.splitlines() == ["aifactory: terminated"]  # not even click's blank line for a ^C echo


def test_a_success_shows_each_gdal_line_once_as_a_warning():
    done = run_snippet(COMMAND, "ok", "--events", "jsonl")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events == [
        {"event": "log", "level": "warning",
         "message": "GDAL: ERROR 1: TIFFWriteDirectoryTagData:IO error writing tag data (3 times)"},
        {"event": "log", "level": "warning", "message": "GDAL: Warning 1: a warning from a worker"},
        {"event": "log", "level": "warning",
         "message": "GDAL: ERROR 1: failed to execute insert : database or disk is full"},
        {"event": "done", "status": "ok"},
    ]
    on_a_terminal = run_snippet(COMMAND, "ok", "--events", "bar")
    assert on_a_terminal.stderr.splitlines() == [
        "warning: GDAL: ERROR 1: TIFFWriteDirectoryTagData:IO error writing tag data (3 times)",
        "warning: GDAL: Warning 1: a warning from a worker",
        "warning: GDAL: ERROR 1: failed to execute insert : database or disk is full"]


def test_with_cpl_debug_on_gdal_speaks_as_it_comes():
    done = run_snippet(COMMAND, "error", "--events", "jsonl", env={"CPL_DEBUG": "ON"})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [*["ERROR 1: TIFFWriteDirectoryTagData:IO error writing tag data"] * 3,
                                        "Warning 1: a warning from a worker",
                                        "ERROR 1: failed to execute insert : database or disk is full",
                                        "aifactory: error: the one line"]


def test_a_bug_shows_them_above_its_traceback():
    done = run_snippet(COMMAND, "bug", "--events", "bar")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[:3] == ["warning: GDAL: ERROR 1: TIFFWriteDirectoryTagData:IO error writing tag data (3 times)",
                         "warning: GDAL: Warning 1: a warning from a worker",
                         "warning: GDAL: ERROR 1: failed to execute insert : database or disk is full"]
    assert lines[3].startswith("Traceback") and lines[-1] == "ValueError: a bug"


def test_libtiffs_printer_is_back_after_the_block():
    done = run_snippet("""
        from aifactory.io.bundled_libs import bundled_library
        from aifactory.io.native_messages import held
        tiff = bundled_library("libtiff")
        with held():
            tiff.TIFFErrorExt(None, b"_tiffReadProc", b"%s", b"held")
        tiff.TIFFErrorExt(None, b"_tiffReadProc", b"%s", b"printed")
    """)
    assert done.returncode == 0 and done.stderr == "_tiffReadProc: printed.\n", done.stderr


def test_without_a_usable_temporary_folder_nothing_is_held_and_the_command_runs():
    done = run_snippet("""
        import errno, tempfile
        def refuse(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        tempfile.mkstemp = refuse
        from aifactory.io.bundled_libs import bundled_library
        from aifactory.io.native_messages import held
        with held() as messages:
            bundled_library("libgdal").CPLError(2, 1, b"as before")
        print(messages.lines())
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n" and done.stderr == "Warning 1: as before\n"


def test_lines_are_those_of_the_block_only():
    done = run_snippet("""
        import threading
        from aifactory.io.bundled_libs import bundled_library
        from aifactory.io.native_messages import held

        def warn(text):
            worker = threading.Thread(target=bundled_library("libgdal").CPLError, args=(2, 1, text))
            worker.start()
            worker.join()

        with held() as first:
            warn(b"first")
        warn(b"between")
        with held() as second:
            warn(b"second")
            warn(b"second")
        print(first.lines(), second.lines())
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['Warning 1: first'] ['Warning 1: second (2 times)']"
    assert done.stderr == ""
