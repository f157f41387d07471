"""Package attributes loaded on first use (PEP 562): a package whose `__init__` lists its
API this way can be imported for its torch-free modules without importing torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def attributes(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: attribute `name` comes from its submodule
    `homes[name]`, imported when first asked for."""

    def getattr_(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    return getattr_
