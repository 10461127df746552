"""Run the benchmarks (``make bench``; ``make bench FULL=1`` for full sizes).

Each ``bench/bench_*.py`` runs in its own process (``python -m bench.<name> [--full]``) so that peak-memory
figures do not leak between them; their output is printed as it comes, and a failing benchmark is
reported without stopping the others.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (e.g. io predict); default all")
    parser.add_argument("--full", action="store_true", help="full sizes (20k² rasters: tens of minutes)")
    args = parser.parse_args()
    scripts = sorted((ROOT / "bench").glob("bench_*.py"))
    if args.names:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.names]
    failed = []
    for script in scripts:
        print(f"\n== {script.stem} ==", flush=True)
        start = time.monotonic()
        command = [sys.executable, "-m", f"bench.{script.stem}", *(["--full"] if args.full else [])]
        result = subprocess.run(command, cwd=ROOT)
        print(f"({script.stem}: {time.monotonic() - start:.0f} s wall)", flush=True)
        if result.returncode != 0:
            failed.append(script.stem)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
