"""Security rules of the job client: which addresses it talks to, with which token, and safe job ids.

- A cluster address is a bare ``http(s)://host:port`` URL (no path, query or credentials in it).
- The Ray dashboard executes whatever entrypoint it is sent, so the client refuses to talk to a
  non-loopback address without a token, unless the user says ``--insecure``; sending a token over plain
  HTTP to another machine is allowed (tunnels, private networks) but warned about.
- The token comes from ``--token``, else ``$AIFACTORY_RAY_TOKEN``, else ``ray.token`` in the jobs
  config file (``$AIFACTORY_JOBS_CONFIG`` or ``~/.config/aifactory/jobs.yaml``), which must then not be
  readable by other users. It is sent as ``Authorization: Bearer`` and never stored in the ledger.
- Job ids go into URLs and file names: they are checked against a strict pattern first.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field

from aifactory.config import StrictModel, load_config
from aifactory.errors import ConfigError, InputError

JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
TOKEN_ENV = "AIFACTORY_RAY_TOKEN"
ADDRESS_ENV = "AIFACTORY_RAY_ADDRESS"


def check_job_id(job_id: str) -> str:
    """``job_id`` if it is safe in a URL path and a file name, else InputError."""
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise InputError(f"invalid job id {job_id!r}: expected letters, digits, '-' or '_' (at most 128)")
    return job_id


def normalize_address(address: str) -> str:
    """``host:port`` or an http(s) URL → ``scheme://host:port`` (ConfigError for anything else)."""
    text = address.strip()
    if "://" not in text:
        text = f"http://{text}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"--address {address!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--address {address!r}: expected http(s)://HOST:PORT of the Ray dashboard")
    if parts.username or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"--address {address!r}: give only http(s)://HOST:PORT (no path, query or "
                          "credentials; use --token)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port or (443 if parts.scheme == 'https' else 8265)}"


def is_loopback(address: str) -> bool:
    """True for localhost / 127.0.0.0/8 / ::1 (host names other than localhost count as remote)."""
    host = urlsplit(normalize_address(address)).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_access(address: str, token: str | None, insecure: bool) -> list[str]:
    """Refuse an unauthenticated remote address; return warnings for the user."""
    if is_loopback(address):
        return []
    if not token and not insecure:
        raise ConfigError(f"{address} is not a loopback address: give a token (--token or ${TOKEN_ENV}) "
                          "or accept an unauthenticated connection with --insecure")
    warnings = []
    if not token:
        warnings.append(f"talking to {address} without authentication (--insecure)")
    elif address.startswith("http://"):
        warnings.append(f"the token is sent to {address} over plain HTTP; prefer https or an SSH tunnel")
    return warnings


class RayConfig(StrictModel):
    address: str | None = Field(default=None, description="default Ray dashboard address")
    token: str | None = Field(default=None, description="bearer token of the Ray dashboard")


class JobsConfig(StrictModel):
    """``~/.config/aifactory/jobs.yaml``: defaults of the job client."""

    ray: RayConfig = RayConfig()


def config_path() -> Path:
    if os.environ.get("AIFACTORY_JOBS_CONFIG"):
        return Path(os.environ["AIFACTORY_JOBS_CONFIG"]).expanduser()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "aifactory" / "jobs.yaml"


def load_jobs_config() -> JobsConfig:
    """The jobs config file (defaults when absent); a token in it requires owner-only permissions."""
    path = config_path()
    if not path.is_file():
        return JobsConfig()
    config = load_config(path, JobsConfig)
    if config.ray.token and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: holds a token but other users may read it (chmod 600 {path})")
    return config


def resolve_token(flag: str | None) -> str | None:
    """The token to send: ``--token``, then ``$AIFACTORY_RAY_TOKEN``, then the config file."""
    token = flag or os.environ.get(TOKEN_ENV) or load_jobs_config().ray.token
    if token is not None and (not token.strip() or any(c.isspace() for c in token.strip())):
        raise ConfigError("the Ray token is empty or contains whitespace")
    return token.strip() if token else None


def resolve_address(flag: str | None) -> str:
    """The Ray address: ``--address``, then ``$AIFACTORY_RAY_ADDRESS``, then the config file."""
    address = flag or os.environ.get(ADDRESS_ENV) or load_jobs_config().ray.address
    if not address:
        raise ConfigError(f"the ray runner needs --address (or ${ADDRESS_ENV}, or ray.address in {config_path()})")
    return normalize_address(address)
