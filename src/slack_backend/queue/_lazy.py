"""Names a package re-exports, each loaded from its module on first use (PEP 562), so importing a package is cheap."""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from importlib import import_module


def lazy_exports(
    package: str, namespace: MutableMapping[str, object], modules: Mapping[str, tuple[str, ...]]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The package's `__getattr__` and `__dir__`: `modules` maps a module to the names it gives the package.

    A name is imported on its first use and kept in `namespace` (the package's globals), so later uses are plain
    attribute reads.
    """
    where = {name: module for module, names in modules.items() for name in names}

    def package_getattr(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        namespace[name] = value
        return value

    def package_dir() -> list[str]:
        return sorted({*namespace, *where})

    return package_getattr, package_dir
