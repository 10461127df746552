"""Worker side of ``aifactory jobs fetch`` on Ray: zip a job's files where the dashboard can serve them.

Why this mechanism: the client must not assume it sees the worker's disk, and the one door it has into
the cluster is the dashboard port (the one a token protects and users tunnel). The dashboard has no file
download, but its log API (``/api/v0/logs/file``) streams any file in a node's Ray log folder, in
chunks, authenticated like the rest, routed to the node that holds it. So ``fetch`` runs this script as
a tiny Ray job pinned to the node that ran the job; it zips the requested files of the job's workdir
into ``<log folder>/aifactory-fetch/<name>.zip`` and the client streams that zip back.

The script runs as ``python pack.py request.json`` from a Ray package of its own and uses only the
standard library, so it works whatever aifactory version the worker has installed (or none). The log
folder is the folder of this process's stdout: Ray opens it on ``<log folder>/job-driver-<id>.log``.
Zips older than a few hours are removed at each run, so the litter stays bounded.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

OUT_DIR = "aifactory-fetch"
RESULT_KEY = "aifactory_pack"
MAX_AGE_S = 6 * 3600
NAME = re.compile(r"[A-Za-z0-9_-]{1,200}")


def ray_log_dir() -> Path:
    """The Ray log folder of this node, found through this job's own stdout."""
    target = Path(os.path.realpath("/proc/self/fd/1"))
    if not re.fullmatch(r"job-driver-.+\.log", target.name):
        raise SystemExit(f"pack: stdout is {target}, not a Ray job driver log: run me as a Ray job")
    return target.parent


def wanted_files(workdir: Path, paths: list[str] | None) -> tuple[list[Path], list[str]]:
    """Files to pack (inside ``workdir`` only) and the requested paths that were skipped."""
    if paths is None:
        return sorted(p for p in workdir.rglob("*") if p.is_file()), []
    found, skipped = [], []
    for item in paths:
        path = Path(item).expanduser()
        path = (path if path.is_absolute() else workdir / path).resolve()
        if workdir in path.parents and path.is_file():
            found.append(path)
        else:
            skipped.append(item)
    return found, skipped


def pack(request: dict[str, Any], log_dir: Path) -> dict[str, Any]:
    """Write the zip; return what the client needs to download it."""
    name = str(request["name"])
    if not NAME.fullmatch(name):
        raise SystemExit(f"pack: invalid name {name!r}")
    workdir = Path(request["workdir"]).expanduser().resolve()
    if not workdir.is_dir():
        raise SystemExit(f"pack: the job's workdir {workdir} does not exist on this node")
    out = log_dir / OUT_DIR
    out.mkdir(exist_ok=True)
    now = time.time()
    for old in out.glob("*.zip"):
        if now - old.stat().st_mtime > MAX_AGE_S:
            old.unlink(missing_ok=True)
    files, skipped = wanted_files(workdir, request.get("paths"))
    final, partial = out / f"{name}.zip", out / f".{name}.part"
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path in files:
            archive.write(path, path.relative_to(workdir).as_posix())
    os.replace(partial, final)
    return {"file": f"{OUT_DIR}/{final.name}", "files": len(files), "bytes": final.stat().st_size,
            "skipped": skipped, "workdir": str(workdir)}


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    result = pack(request, ray_log_dir())
    print(json.dumps({RESULT_KEY: result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
