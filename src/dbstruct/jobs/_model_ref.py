"""A job file's ``response_model``: ``"package.module:ClassName"``, imported.

A name that imports nothing is named with the closest module or class there is.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re

from pydantic import BaseModel

from dbstruct.jobs._did_you_mean import did_you_mean

__all__ = ["import_model"]

_MODEL_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


@functools.lru_cache(maxsize=64)
def import_model(ref: str) -> type[BaseModel]:
    """The pydantic model class ``"package.module:ClassName"`` names; a ValueError (with the
    closest module or class name) when there is none.

    >>> import_model("dbstruct.examples:TicketTriage")
    <class 'dbstruct.examples.TicketTriage'>
    """
    if not _MODEL_REF.fullmatch(ref):
        raise ValueError(f"expected package.module:ClassName, got {ref!r}")
    module_name, _, class_name = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        missing = getattr(e, "name", None)
        if missing == module_name:
            raise ValueError(
                f"cannot import {module_name!r}: there is no module of that name"
                + did_you_mean(
                    module_name.rpartition(".")[2],
                    _sibling_modules(module_name),
                    prefix=module_name.rpartition(".")[0] + ".",
                )
            ) from None
        raise ValueError(f"cannot import {module_name!r} ({type(e).__name__}: {e})") from None
    found = getattr(module, class_name, None)
    if found is None:
        models = [
            name
            for name, value in vars(module).items()
            if isinstance(value, type) and issubclass(value, BaseModel) and value is not BaseModel
        ]
        raise ValueError(
            f"module {module_name!r} has no class {class_name!r}"
            f"{did_you_mean(class_name, models, prefix=module_name + ':')}"
        )
    if not (isinstance(found, type) and issubclass(found, BaseModel)):
        raise ValueError(f"{ref!r} is not a pydantic BaseModel class")
    return found


def _sibling_modules(module_name: str) -> list[str]:
    """The modules beside ``module_name`` in its package (top-level ones: none listed)."""
    parent = module_name.rpartition(".")[0]
    if not parent:
        return []
    try:
        package = importlib.import_module(parent)
    except ImportError:
        return []
    paths = getattr(package, "__path__", None)
    return [m.name for m in pkgutil.iter_modules(paths)] if paths else []
