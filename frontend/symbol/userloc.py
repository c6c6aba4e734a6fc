"""Where in the user's code an op was written: the ``loc`` of traced nodes and the place
named by tracing errors (DESIGN.md s.4).

The innermost frame that is the user's: frames of ember's own packages are skipped, and so
are the frames that only start a program, which are never where an op is written: ``runpy``
(``python -m``), ``importlib``, other ``<frozen ...>`` modules, and the ``ember`` console
script's entry point (its module calls ``ember.cli.main``). When no frame is left (a model
made only of ember's layers, traced by the ``ember`` command) there is no location.
"""
from __future__ import annotations

import os
import sys


def _dirs() -> tuple[str, ...]:
    import importlib

    import ember
    from ember import backends, ir, passes, runtime
    dirs = [os.path.dirname(os.path.abspath(m.__file__)) + os.sep
            for m in (ember, ir, passes, backends, runtime)]
    dirs.append(os.path.dirname(os.path.abspath(importlib.__file__)) + os.sep)
    return tuple(dirs)


def _starters() -> set[str]:
    import runpy
    return {os.path.abspath(runpy.__file__)} if getattr(runpy, "__file__", None) else set()


EMBER_DIRS = _dirs()  # ember's packages, and importlib's (when not frozen)
_STARTERS = _starters()  # runpy's file (when not frozen)


def is_internal(filename: str, module_globals: dict | None = None,
                code_name: str = "") -> bool:
    """Whether a frame of ``filename`` (with its module's globals and code name) belongs to
    ember or to the machinery that started the program rather than to the user."""
    if filename.startswith("<frozen "):
        return True
    path = os.path.abspath(filename)
    if path.startswith(EMBER_DIRS) or path in _STARTERS:
        return True
    if code_name == "<module>" and module_globals is not None:
        main = module_globals.get("main")  # the console script: from ember.cli import main
        return getattr(main, "__module__", None) == "ember.cli"
    return False


def user_frame():
    """The innermost user frame of the calling stack, or None."""
    frame = sys._getframe(1)
    while frame is not None:
        if not is_internal(frame.f_code.co_filename, frame.f_globals, frame.f_code.co_name):
            return frame
        frame = frame.f_back
    return None


def where(frame) -> str | None:
    """``file.py:12`` of ``frame`` (the file's name without its folder)."""
    if frame is None:
        return None
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def user_loc() -> str | None:
    """``file.py:12`` of the innermost user frame of the calling stack, or None."""
    return where(user_frame())


def traceback_loc(exc: BaseException) -> str | None:
    """``file.py:12`` of the innermost user frame in ``exc``'s traceback, if any."""
    tb, found = exc.__traceback__, None
    while tb is not None:
        f = tb.tb_frame
        if not is_internal(f.f_code.co_filename, f.f_globals, f.f_code.co_name):
            found = f"{os.path.basename(f.f_code.co_filename)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found
