"""Secret references in job files, and the refusal of secrets written inline.

A job file names secrets, it never holds them::

    credentials:
      host: https://adb-123.4.azuredatabricks.net
      token: "{{secrets/dbstruct/serving-token}}"   # Databricks secret scope / key
      # or: token: "{{env:DATABRICKS_TOKEN}}"       # an environment variable

``{{secrets/<scope>/<key>}}`` is the syntax Databricks uses for secrets in Spark
configuration and cluster environment variables
(https://docs.databricks.com/security/secrets/secrets-spark-conf-env-var.html); it is read
with ``dbutils.secrets.get(scope, key)``. ``{{env:VAR}}`` reads an environment variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from dbstruct.errors import ConfigurationError

__all__ = [
    "SECRET_KEYS",
    "find_dbutils",
    "inline_secret_errors",
    "is_reference",
    "resolve_references",
]

# Scope and key names "must consist of alphanumeric characters, dashes, underscores, and
# periods" (Secrets API, https://docs.databricks.com/api/workspace/secrets/createscope and
# /putsecret).
_SECRET_REF = re.compile(r"\{\{\s*secrets/([\w.-]+)/([\w.-]+)\s*\}\}")
_ENV_REF = re.compile(r"\{\{\s*env:([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_ANY_REF = re.compile(r"\{\{.*?\}\}")

#: keys whose value must be a reference, wherever they appear in a job file
SECRET_KEYS = frozenset(
    {"token", "api_key", "apikey", "client_secret", "password", "secret", "access_token", "pat"}
)
# Shapes of credentials, as dbstruct.redaction.redact knows them: PATs ("dapi" + hex), OAuth
# client secrets ("dose" + alphanumerics) and JWTs (OAuth access tokens).
_TOKEN_SHAPES = (
    re.compile(r"\bdapi[0-9a-fA-F]{16,}"),
    re.compile(r"\bdose[0-9a-zA-Z]{16,}"),
    re.compile(r"\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}"),
)
_USE_A_REFERENCE = (
    "use a reference instead, e.g. '{{secrets/<scope>/<key>}}' (Databricks secrets) "
    "or '{{env:DATABRICKS_TOKEN}}'"
)


def is_reference(value: object) -> bool:
    """Whether ``value`` is exactly one ``{{secrets/s/k}}`` or ``{{env:VAR}}`` reference."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    return bool(_SECRET_REF.fullmatch(text) or _ENV_REF.fullmatch(text))


def inline_secret_errors(data: Any, path: str = "") -> list[str]:
    """``"<key.path>: ..."`` for every secret written inline in a parsed job file.

    A key named like a secret (``token``, ``client_secret``, ...) must hold a reference, and
    no string anywhere may look like a token. The messages never repeat the value.
    """
    errors: list[str] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if str(key).lower() in SECRET_KEYS and value is not None and not is_reference(value):
                errors.append(f"{where}: a secret written inline is refused; {_USE_A_REFERENCE}")
                continue
            errors.extend(inline_secret_errors(value, where))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            errors.extend(inline_secret_errors(item, f"{path}[{i}]"))
    elif isinstance(data, str) and any(p.search(data) for p in _TOKEN_SHAPES):
        errors.append(
            f"{path or '<root>'}: looks like a Databricks token written inline; {_USE_A_REFERENCE}"
        )
    return errors


def check_reference_syntax(value: str) -> str:
    """``value`` unchanged, or ValueError when a ``{{...}}`` in it is no known reference."""
    for match in _ANY_REF.finditer(value):
        text = match.group(0)
        if not (_SECRET_REF.fullmatch(text) or _ENV_REF.fullmatch(text)):
            raise ValueError(
                f"{text!r} is not a reference; write '{{{{secrets/<scope>/<key>}}}}' or "
                f"'{{{{env:VAR}}}}'"
            )
    return value


def resolve_references(
    value: str,
    where: str,
    *,
    dbutils: Any = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """``value`` with its references replaced by what they name.

    >>> resolve_references("{{env:HOME}}/x", "target.path", environ={"HOME": "/root"})
    '/root/x'

    ``dbutils`` is only looked for (:func:`find_dbutils`) when a secrets reference is used.
    Errors name ``where`` and the reference, never a value.
    """
    env = os.environ if environ is None else environ
    found: dict[str, Any] = {"dbutils": dbutils}

    def env_value(match: re.Match[str]) -> str:
        name = match.group(1)
        text = env.get(name)
        if text is None or not text.strip():
            raise ConfigurationError(f"{where}: environment variable {name} is not set")
        return text.strip()

    def secret_value(match: re.Match[str]) -> str:
        scope, key = match.group(1), match.group(2)
        if found["dbutils"] is None:
            found["dbutils"] = find_dbutils(where)
        try:
            text = found["dbutils"].secrets.get(scope=scope, key=key)
        except Exception as e:  # py4j, REST or permission errors: name the secret, not values
            raise ConfigurationError(
                f"{where}: cannot read secret {key!r} of scope {scope!r}: {type(e).__name__}"
            ) from None
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError(f"{where}: secret {key!r} of scope {scope!r} is empty")
        return text.strip()

    try:
        check_reference_syntax(value)
    except ValueError as e:
        raise ConfigurationError(f"{where}: {e}") from None
    return _SECRET_REF.sub(secret_value, _ENV_REF.sub(env_value, value))


def find_dbutils(where: str) -> Any:
    """Databricks' ``dbutils``: the runtime's on Databricks, else databricks-sdk's client-side one.

    https://databricks-sdk-py.readthedocs.io/en/latest/dbutils.html: ``from
    databricks.sdk.runtime import dbutils`` on a cluster; ``WorkspaceClient().dbutils``
    elsewhere, which implements ``dbutils.secrets`` over the REST API with the SDK's auth.
    """
    try:
        if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
            from databricks.sdk.runtime import dbutils

            return dbutils
        from databricks.sdk import WorkspaceClient

        return WorkspaceClient().dbutils
    except Exception as e:
        raise ConfigurationError(
            f"{where}: a {{{{secrets/...}}}} reference needs Databricks secrets, and none are "
            f"reachable here ({type(e).__name__}); run on Databricks, configure databricks-sdk "
            "auth (DATABRICKS_HOST and a token or profile), or use '{{env:VAR}}'"
        ) from None
