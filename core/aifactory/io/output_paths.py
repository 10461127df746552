"""Where an output may go: a file where a file is expected, a folder where a folder is, and never over what a user
put in a folder.

A folder output (a report, an RPS sweep, a dataset) is replaced whole when it is written again
(:func:`aifactory.io.atomic.atomic_path`). Replacing it must not delete what the command did not write: the
analyst's notes, or the very inputs of the command (``aifactory rps --pred p.gpkg --truth t.gpkg -o .`` in the
folder that holds them). So each folder output carries a hidden list of the names it holds
(:data:`LISTING_NAME`); an existing folder is replaced only when it is empty, or when everything in it is on that
list or is written again by the new output. A folder that holds files but no list is refused before any work:
nothing tells it from a user's folder (an output of a version before the list has to be moved once).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from aifactory.errors import InputError

#: the hidden file in a folder output that lists what the output holds
LISTING_NAME = ".aifactory-output"


def absolute(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute with ``.`` and ``..`` resolved (``-o .`` names the current folder, not "")."""
    return Path(os.path.abspath(path))


def make_parent(path: Path) -> None:
    """Create the folders above ``path``; one line when a file stands where a folder must be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)
        raise InputError(f"{path}: {blocking} is a file, not a folder") from None


def check_output_folder(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, a folder to write files into that is a file; the folder is made later."""
    folder = absolute(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{path}: is a file, not a folder: give the folder to write into")
    return folder


def output_folder(path: str | os.PathLike[str]) -> Path:
    """The folder a command writes its files into (train's, a pipeline's), created if needed."""
    folder = check_output_folder(path)
    make_parent(folder)
    folder.mkdir(exist_ok=True)
    return folder


def check_file_output(final: Path) -> None:
    """Refuse an output file whose name is taken by a folder, or that a file above it cannot hold."""
    if final.is_dir():
        raise InputError(f"{final}: is a folder: give the name of the file to write")
    blocking = next((p for p in reversed(final.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise InputError(f"{final}: {blocking} is a file, not a folder")


def refuse_inputs_as_output(output: Path, inputs: dict[str, str | os.PathLike[str] | None]) -> None:
    """Refuse an output that is one of the command's inputs (``role -> path``; a link to it included): publishing
    it would replace the input by the command's result, and the input would be lost."""
    if not output.exists():
        return
    for role, path in inputs.items():
        if path is not None and Path(path).exists() and os.path.samefile(path, output):
            raise InputError(f"{output}: the output is the {role} {path}: give the output another name")


def check_file_outputs(finals: list[Path]) -> None:
    """:func:`check_file_output` for every file a command will write, before it writes the first one."""
    for final in finals:
        check_file_output(final)


def file_output(path: str | os.PathLike[str]) -> Path:
    """``path`` checked as the name of an output file, with the folders above it created."""
    final = absolute(path)
    check_file_output(final)
    make_parent(final)
    return final


def check_folder_output(final: Path) -> None:
    """Refuse, before any work, a folder output that would replace a file, the current folder, or what it did not
    write (see the module's docstring)."""
    if final.exists() and not final.is_dir():
        raise InputError(f"{final}: is a file, not a folder")
    if final == Path.cwd() or final in Path.cwd().parents:
        raise InputError(f"{final}: is the current folder or holds it: give the output a folder of its own")
    if final.is_dir():
        refuse_foreign_entries(final, written=set())


def folder_output(path: str | os.PathLike[str]) -> Path:
    """``path`` checked as a folder output, for a command to call before its work (see :func:`check_folder_output`)."""
    final = absolute(path)
    check_folder_output(final)
    return final


def refuse_foreign_entries(final: Path, written: set[str]) -> None:
    """Raise when the folder ``final`` holds names that neither its listing nor ``written`` (the new output) has."""
    listed = _listed_names(final)
    foreign = sorted(entry.name for entry in final.iterdir()
                     if entry.name != LISTING_NAME and entry.name not in listed and entry.name not in written)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(f"{final}: the folder holds {shown}, which this command did not write: give an empty or "
                         f"new folder, or move them (nothing was changed)")


def write_listing(folder: Path) -> None:
    """List what the finished folder output ``folder`` holds, inside it."""
    names = sorted(entry.name for entry in folder.iterdir() if entry.name != LISTING_NAME)
    (folder / LISTING_NAME).write_text(json.dumps(names) + "\n", encoding="utf-8")


def _listed_names(folder: Path) -> set[str]:
    try:
        names = json.loads((folder / LISTING_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()  # no listing (or a damaged one): only the new output's names are replaced
    return {str(name) for name in names} if isinstance(names, list) else set()
