"""The credentials a job calls its endpoint with: the emulator's, the job file's, or the usual."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from dbstruct.auth import Credentials, resolve_credentials, serving_base_url
from dbstruct.jobs._demo import emulator_credentials, local_model_credentials
from dbstruct.jobs._secrets import resolve_references

if TYPE_CHECKING:
    from dbstruct.jobs.conf import CredentialsConfig, JobConfig

__all__ = ["configured_credentials", "job_credentials"]


@contextlib.contextmanager
def job_credentials(
    conf: JobConfig,
    credentials: Credentials | None = None,
    *,
    dbutils: Any = None,
    environ: Mapping[str, str] | None = None,
) -> Iterator[Credentials]:
    """Explicit ``credentials`` first; else, with ``emulator:``, an in-process emulator, or
    with ``local_model:`` the local model (stopped on exit); else the job file's
    ``credentials:`` references; else dbstruct's resolution order
    (:func:`dbstruct.auth.resolve_credentials`)."""
    if credentials is not None:
        yield credentials
        return
    if conf.emulator is not None:
        with emulator_credentials(conf.emulator) as emulated:
            yield emulated
        return
    if conf.local_model is not None:
        with local_model_credentials(conf.local_model) as local:
            yield local
        return
    yield configured_credentials(conf.credentials, dbutils=dbutils, environ=environ)


def configured_credentials(
    conf: CredentialsConfig | None,
    *,
    dbutils: Any = None,
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """Credentials from a job file's ``credentials:`` section, references resolved."""
    if conf is None:
        return resolve_credentials(environ=environ, dbutils=dbutils)

    def value(key: str) -> str | None:
        raw = getattr(conf, key)
        if raw is None:
            return None
        where = f"credentials.{key}"
        return resolve_references(raw, where, dbutils=dbutils, environ=environ)

    host, token = value("host"), value("token")
    if conf.client_secret is not None:
        # OAuth M2M through databricks-sdk, with only these settings in its environment
        m2m = {
            "DATABRICKS_HOST": host or "",
            "DATABRICKS_CLIENT_ID": value("client_id") or "",
            "DATABRICKS_CLIENT_SECRET": value("client_secret") or "",
        }
        return resolve_credentials(environ=m2m)
    base_url = serving_base_url(host) if host else None
    return resolve_credentials(base_url=base_url, api_key=token, environ=environ)
