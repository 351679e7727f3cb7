"""Objects of the user's own, by import path: a model class, an optimizer rule or class."""

from __future__ import annotations

import importlib
from typing import Any

from harness.config import ConfigError


def import_object(target: str, key: str, what: str) -> Any:
    """The object at ``target`` (``package.module.name``, or ``package.module`` itself); a
    ConfigError on ``key`` unless it imports (``what``: what is expected, with an example)."""
    module_path, _, name = target.rpartition(".")
    if not module_path or not all(part.isidentifier() for part in target.split(".")):
        raise ConfigError(key, target, f"expected the import path of {what}")
    try:
        module = importlib.import_module(module_path)
    except ImportError as error:
        raise ConfigError(key, target, f"cannot be imported: {error}") from error
    if hasattr(module, name):
        return getattr(module, name)
    try:  # a module of a package that does not import it itself
        return importlib.import_module(target)
    except ModuleNotFoundError as error:
        if error.name != target:  # the module exists but fails to import one of its own
            raise ConfigError(key, target, f"cannot be imported: {error}") from error
    except ImportError as error:
        raise ConfigError(key, target, f"cannot be imported: {error}") from error
    raise ConfigError(key, target, f"module {module_path} has no attribute {name}")
