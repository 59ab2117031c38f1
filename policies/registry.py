"""Find a policy class by name, dotted path or file, without an engine-side list to edit.

A policy family is a sub-package of ``policies`` (``eviction``, ``prefetch``, ...). Each
module in it other than ``base`` holds one policy, and the module's name is the policy's name:
adding ``policies/eviction/mine.py`` makes ``eviction="mine"`` work. A policy outside the
package is selected by dotted path (``mypkg.mod.MyPolicy``) or by file
(``path/to/file.py:MyPolicy``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

FAMILIES = ("eviction", "prefetch", "admission", "scheduler", "routing")


class UnknownPolicyError(ValueError):
    """A policy name that resolves to nothing; the message lists what would."""


def available(family: str) -> list[str]:
    """Names of the policies shipped in ``policies/<family>/``."""
    package = _family_package(family)
    return sorted(
        m.name for m in pkgutil.iter_modules(package.__path__) if m.name != "base" and not m.name.startswith("_")
    )


def resolve(family: str, ref: str | Callable[..., Any]) -> Callable[..., Any]:
    """A factory (usually the class) for the policy ``ref`` of ``family``.

    ``ref`` is a shipped name (``"lru"``), a dotted path (``"mypkg.MyPolicy"``), a file
    reference (``"my_policy.py:MyPolicy"``) or already a callable (a class or a partial).
    """
    if callable(ref):
        return ref
    if not isinstance(ref, str) or not ref:
        raise UnknownPolicyError(f"{family} policy must be a name or a class, got {ref!r}")
    if ":" in ref:
        file_part, _, attr = ref.rpartition(":")
        return _attribute(_load_file(family, file_part), attr, family, ref)
    if "." in ref:
        module_name, _, attr = ref.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UnknownPolicyError(f"{family} policy {ref!r}: cannot import {module_name!r} ({exc})") from None
        return _attribute(module, attr, family, ref)
    names = available(family)
    if ref not in names:
        raise UnknownPolicyError(
            f"unknown {family} policy {ref!r}; choose one of: {', '.join(names)} "
            f"(or give a dotted path / 'file.py:Class')"
        )
    module = importlib.import_module(f"policies.{family}.{ref}")
    return _single_policy_class(module, family)


def policy_class(factory: Callable[..., Any]) -> Any:
    """The class (or function) a factory builds: itself, or what a ``functools.partial`` wraps,
    as hydra's ``_partial_`` makes; its class attributes (``offline``, ``acts_on_sessions``)
    are read from here."""
    return getattr(factory, "func", factory)


def policy_label(factory: Callable[..., Any]) -> str:
    """A short name for reports: the module name of a shipped policy, else the qualified name."""
    func = policy_class(factory)
    module = getattr(func, "__module__", "") or ""
    if module.startswith("policies."):
        return module.rsplit(".", 1)[-1]
    return getattr(func, "__qualname__", repr(func))


def _family_package(family: str) -> ModuleType:
    if family not in FAMILIES:
        raise UnknownPolicyError(f"unknown policy family {family!r}; families: {', '.join(FAMILIES)}")
    return importlib.import_module(f"policies.{family}")


def _base_class(family: str) -> type:
    return importlib.import_module(f"policies.{family}.base").BASE_CLASS


def _single_policy_class(module: ModuleType, family: str) -> type:
    base = _base_class(family)
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, base)
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
    ]
    if len(found) != 1:
        raise UnknownPolicyError(
            f"{module.__name__} must define exactly one concrete {base.__name__}, found {len(found)}"
        )
    return found[0]


def _attribute(module: ModuleType, attr: str, family: str, ref: str) -> Callable[..., Any]:
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UnknownPolicyError(f"{family} policy {ref!r}: {module.__name__} has no {attr!r}") from None


def _load_file(family: str, file_part: str) -> ModuleType:
    path = Path(file_part).expanduser().resolve()
    if not path.is_file():
        raise UnknownPolicyError(f"{family} policy file {file_part!r} does not exist")
    # Named by the file's path and content, not its name alone: two folders' ``my_policy.py``
    # are two policies, and a file edited since it was loaded (a notebook's next cell) is
    # loaded again rather than served from the first load.
    digest = hashlib.sha256(str(path).encode() + b"\0" + path.read_bytes()).hexdigest()[:16]
    module_name = f"_kvsim_user_{family}_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
