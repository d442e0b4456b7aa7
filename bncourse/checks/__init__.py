"""Self-checks for the exercises: ``check("bn_forward", batchnorm_forward)``.

The framework is in :mod:`bncourse.checks.core`. Every module of this package named ``ch*``
(``ch3_batchnorm.py``, ...) is imported here, so its ``@register``-ed exercises are known to
:func:`check` and to the grader without editing this file. A chapter module that fails to import
does not break the others; its error is kept in ``IMPORT_ERRORS`` and shown when one of its
exercises is asked for.
"""
from __future__ import annotations

import importlib
import pkgutil

from .core import (
    IMPORT_ERRORS,
    REGISTRY,
    CheckFailure,
    CheckTimeout,
    Exercise,
    ForbiddenCall,
    check,
    diagnose,
    expect,
    expect_array,
    expect_fraction,
    expect_scalar,
    get_exercise,
    hint,
    register,
    reset_hints,
    time_limit,
)

__all__ = [
    "CheckFailure", "CheckTimeout", "Exercise", "ForbiddenCall", "IMPORT_ERRORS", "REGISTRY", "check",
    "diagnose", "expect", "expect_array", "expect_fraction", "expect_scalar", "get_exercise", "hint", "register", "reset_hints", "time_limit",
    "chapter_modules",
]


def chapter_modules() -> list[str]:
    """Names of the chapter check modules found in this package (``ch*``), sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("ch"))


def _import_chapters() -> None:
    for name in chapter_modules():
        try:
            importlib.import_module(f"{__name__}.{name}")
        except Exception as e:  # keep the other chapters usable; reported by get_exercise / tests
            IMPORT_ERRORS[name] = f"{type(e).__name__}: {e}"


_import_chapters()
