"""Post-import hooks: run a function right after a named module finishes importing (at once if it already has).

verl loads our plugin in every process during ``import verl``; importing the verl modules that hold its registries
(the engine, the trainers, the reward loop) there would make every process pay for them, and import their
warnings. Instead each registration waits for the module that owns the registry: when verl (or anyone) imports
that module, the hook runs before the importer gets the module back, so a name bound with ``from ... import`` is
already the patched one. A process that never imports the module never pays for the registration.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading
from typing import Callable

Hook = Callable[[object], None]
_HOOKS: dict[str, list[Hook]] = {}
_LOCK = threading.RLock()
_SEARCHING: set[str] = set()


def _fully_imported(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)


def when_imported(name: str, hook: Hook) -> None:
    """Run ``hook(module)`` once ``name`` is imported; now if it already is."""
    with _LOCK:
        if not _fully_imported(name):
            _install()
            _HOOKS.setdefault(name, []).append(hook)
            return
    hook(sys.modules[name])


def _run(name: str, module) -> None:
    with _LOCK:
        hooks = _HOOKS.pop(name, [])
    for hook in hooks:
        hook(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a hooked module it asks the other finders, then wraps the loader's exec_module."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _HOOKS or fullname in _SEARCHING:
            return None
        _SEARCHING.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            _SEARCHING.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _run(fullname, module)

        spec.loader.exec_module = exec_module  # this module's loader instance only
        return spec


_FINDER = _Finder()


def _install() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)

