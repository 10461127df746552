"""Jobs: a pipeline run handed to a runner, tracked in a ledger that outlives the client and the cluster.

A job is a pipeline YAML + a runner (``local``: a detached subprocess; ``ray``: the Ray Jobs REST API)
+ resources + a code ref. Every runner starts the same command, ``python -m aifactory.cli run
PIPELINE.yaml --events jsonl -o WORKDIR``, whose JSON-lines event stream (DESIGN.md, "Events") is how a
client learns progress, artifacts and the outcome.

Modules: ``base`` (statuses, the runner protocol), ``events`` (reading the stream back), ``ledger``
(SQLite history), ``security`` (addresses, tokens, job ids), ``aifactory.coderef`` (git worktrees for
``--ref``), ``resources``, ``local``, ``rayapi`` (HTTP client) + ``ray`` (runner), ``pack`` (the
worker-side artifact packer), ``service`` (submit/refresh/stop/logs/fetch) and ``commands`` (CLI).
"""

from aifactory.jobs.base import STATUSES, TERMINAL

__all__ = ["STATUSES", "TERMINAL"]
