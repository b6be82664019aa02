"""Packages whose public names are imported on first use (PEP 562 module ``__getattr__``).

``import hvit`` should not import Captum, timm or torchvision, whose first imports take seconds: an app
that only reads an image or builds a model would wait for all of them. A package lists each public
name with the module that defines it, and `lazy_module` gives it the ``__getattr__`` and ``__dir__``
that import that module the first time the name is looked up.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any


def lazy_module(
    package: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose names are imported on first use.

    Args:
        package: the package's name (``"hvit"``, ``"hvit.data"``).
        exports: public name -> the module that defines it.
        namespace: the package's ``globals()``: a name found once is stored there, so later look-ups do
            not reach ``__getattr__`` again.

    Returns:
        ``(__getattr__, __dir__)``. ``__getattr__`` also returns the package's submodules by name
        (``hvit.registry``), and raises ``AttributeError`` for anything else.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            if importlib.util.find_spec(f"{package}.{name}") is not None:  # a submodule
                return importlib.import_module(f"{package}.{name}")
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
