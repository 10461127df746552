"""A small client of the Ray dashboard's HTTP API: jobs, packages, nodes and log files.

Plain ``urllib`` rather than ``requests`` or the Ray SDK: the client side needs only JSON requests, one
binary upload and one streamed download, and this way it imports nothing beyond the standard library
(no Ray on the client, and a module the QGIS-side Python could use as is). Every failure becomes one
line: :class:`Unreachable` when nothing answers (the caller may then mark a job failed), an
:class:`~aifactory.errors.InputError` naming the address for a refused token (401/403), an unknown job
(404) or any other HTTP error (the last line of Ray's traceback).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import IO, Any

from aifactory.errors import InputError
from aifactory.jobs.security import check_job_id, normalize_address

CHUNK = 1 << 20


class Unreachable(InputError):
    """Nothing answered at the address (refused, timed out, no route, bad TLS)."""


class NotFound(InputError):
    """The dashboard answered 404."""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and line.strip() != "."]
    return lines[-1][:300] if lines else "no details"


class RayAPI:
    """The dashboard at ``address`` (``http(s)://host:port``), with an optional bearer ``token``."""

    def __init__(self, address: str, token: str | None = None, timeout: float = 15.0) -> None:
        self.address = normalize_address(address)
        self.token = token
        self.timeout = timeout

    def _open(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
              timeout: float | None = None) -> Any:
        request = urllib.request.Request(self.address + path, data=body, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            # the address was normalized to http(s), so urlopen cannot be steered to file:// or ftp://
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            detail = _last_line(exc.read().decode("utf-8", "replace"))
            if exc.code == 401:
                raise InputError(f"{self.address}: the Ray dashboard wants a token (HTTP 401): give --token "
                                 "or set AIFACTORY_RAY_TOKEN") from None
            if exc.code == 403:
                raise InputError(f"{self.address}: the Ray dashboard refused the token (HTTP 403)") from None
            if exc.code == 404:
                raise NotFound(f"{self.address}: {detail} (HTTP 404)") from None
            raise InputError(f"{self.address}: {method} {path.split('?')[0]} failed (HTTP {exc.code}): "
                             f"{detail}") from None
        except OSError as exc:  # URLError, refused, reset, timeouts, TLS errors
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"cannot reach the Ray dashboard at {self.address}: {reason}") from None

    def _json(self, method: str, path: str, payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        with self._open(method, path, body, "application/json" if body is not None else None) as response:
            text = response.read().decode("utf-8", "replace")
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise InputError(f"{self.address}{path}: not a Ray dashboard (the answer is not JSON)") from None

    def check(self) -> str:
        """The cluster's Ray version; one line when something else answers at the address (a web server
        refused the package upload with "HTTP 501" and its HTML page's last line)."""
        try:
            data = self._json("GET", "/api/version")
        except NotFound:
            data = None
        if not isinstance(data, dict) or "ray_version" not in data:
            raise InputError(f"{self.address}: not a Ray dashboard (no Ray version at /api/version)")
        return str(data["ray_version"])

    def submit(self, payload: dict[str, Any]) -> str:
        """POST a job; returns its submission id."""
        return str(self._json("POST", "/api/jobs/", payload)["submission_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self._json("GET", f"/api/jobs/{check_job_id(job_id)}")
        return data

    def logs(self, job_id: str) -> str:
        return str(self._json("GET", f"/api/jobs/{check_job_id(job_id)}/logs").get("logs", ""))

    def stop(self, job_id: str) -> bool:
        return bool(self._json("POST", f"/api/jobs/{check_job_id(job_id)}/stop").get("stopped"))

    def nodes(self) -> list[dict[str, Any]]:
        """Live nodes with ``node_id``, ``node_ip`` and ``resources_total``."""
        data = self._json("GET", "/api/v0/nodes?detail=1&limit=10000")
        rows = data.get("data", {}).get("result", {}).get("result", [])
        return [row for row in rows if row.get("state") == "ALIVE"]

    def package_exists(self, name: str) -> bool:
        try:
            with self._open("GET", f"/api/packages/gcs/{urllib.parse.quote(name)}"):
                return True
        except NotFound:
            return False

    def upload_package(self, name: str, data: bytes) -> None:
        """Store a zip in the cluster (GCS) as ``gcs://name`` for ``runtime_env``."""
        with self._open("PUT", f"/api/packages/gcs/{urllib.parse.quote(name)}", data,
                        "application/octet-stream", timeout=max(self.timeout, 120.0)):
            pass

    def download_log_file(self, node_id: str, filename: str, stream: IO[bytes],
                          on_bytes: Callable[[int], None] | None = None) -> int:
        """Stream ``filename`` (relative to the node's Ray log folder) into ``stream``; returns bytes."""
        query = urllib.parse.urlencode({"node_id": node_id, "filename": filename, "lines": -1, "timeout": 600})
        total = 0
        with self._open("GET", f"/api/v0/logs/file?{query}", timeout=max(self.timeout, 600.0)) as response:
            while chunk := response.read(CHUNK):
                stream.write(chunk)
                total += len(chunk)
                if on_bytes is not None:
                    on_bytes(total)
        return total

