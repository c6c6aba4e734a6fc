"""The ``mxnet`` package: ember under MXNet's name, for code that cannot be edited.

Libraries written for MXNet 1.x (GluonCV, the Gluon book's d2lzh, ...) say ``import mxnet``.
``python -m ember.mxnet_alias install`` (or ``ember mxnet-alias install``) writes a small
``mxnet`` package into the running environment's site-packages, recorded as the distribution
``ember-mxnet`` so that ``pip uninstall ember-mxnet`` removes it again. Importing it:

- refuses with a clear ``ImportError`` when a real MXNet is installed anywhere on ``sys.path``
  (it never shadows one silently; installing refuses too);
- makes ``mxnet`` a thin module whose attributes ARE ember's (``mxnet.nd is ember.nd``) and
  whose ``__version__`` is the MXNet API level ember implements (``API_VERSION``);
- resolves every submodule path through ember's: ``import mxnet.gluon.model_zoo.vision``
  binds ``sys.modules['mxnet.gluon.model_zoo.vision']`` to ``ember.gluon.model_zoo.vision``
  itself (module identity, no copies), by a meta-path finder in the style of PEP 451.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import os
import sys
import sysconfig
import types
from pathlib import Path

API_VERSION = "1.9.1"
DIST_NAME = "ember_mxnet"
MARKER = "# ember mxnet alias"
# distributions of real MXNet on PyPI (CPU, CUDA and MKL builds)
_REAL_PREFIXES = ("mxnet", "mxnet-cu", "mxnet-mkl", "mxnet-native")


class AliasError(ImportError):
    """The alias cannot be installed or imported (a real MXNet is present, ...)."""


def _is_alias_dir(path: Path) -> bool:
    init = path / "__init__.py"
    try:
        with open(init, encoding="utf-8") as f:
            return f.readline().strip() == MARKER
    except OSError:
        return False


def real_mxnet_locations(search_path: list[str] | None = None) -> list[str]:
    """Where a real MXNet lives on ``search_path`` (default ``sys.path``): an ``mxnet``
    package that is not this alias, or an installed distribution named like MXNet's."""
    found = []
    search_path = list(sys.path) if search_path is None else search_path
    for entry in search_path:
        base = Path(entry or ".")
        pkg = base / "mxnet"
        if (pkg / "__init__.py").is_file() and not _is_alias_dir(pkg):
            found.append(str(pkg))
    for dist in importlib.metadata.distributions(path=search_path):
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name == "mxnet" or name.startswith(_REAL_PREFIXES[1:]):
            found.append(f"{name} {dist.version} (an installed distribution)")
    return sorted(set(found))


class _AliasLoader(importlib.abc.Loader):
    """Hands out ember's module for ``mxnet.<rest>``, leaving the module untouched."""

    def __init__(self, target: str):
        self.target = target
        self._spec = None

    def create_module(self, spec):
        mod = importlib.import_module(self.target)
        self._spec = getattr(mod, "__spec__", None)
        return mod

    def exec_module(self, module):
        # importlib sets __spec__ on whatever create_module returned: give ember its own back
        if self._spec is not None:
            module.__spec__ = self._spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    """``mxnet.a.b`` -> ``ember.a.b`` for every submodule ember has."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("mxnet."):
            return None
        target_name = "ember." + fullname[len("mxnet."):]
        try:
            if importlib.util.find_spec(target_name) is None:
                return None
        except (ImportError, ValueError):
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(target_name))


class _MXNetModule(types.ModuleType):
    """The top-level ``mxnet``: ember's names, MXNet's version."""

    def __getattr__(self, name):
        import ember
        try:
            return getattr(ember, name)
        except AttributeError:
            raise AttributeError(f"module 'mxnet' (ember) has no attribute {name!r}") from None

    def __dir__(self):
        import ember
        return sorted(set(dir(ember)) | {"__version__"})


def activate(module_name: str = "mxnet") -> types.ModuleType:
    """Make ``sys.modules[module_name]`` ember under MXNet's name (what the installed
    ``mxnet/__init__.py`` calls). Raises :class:`AliasError` if a real MXNet is on sys.path."""
    real = real_mxnet_locations()
    if real:
        raise AliasError(
            "the ember 'mxnet' alias refuses to shadow a real MXNet installation ("
            + "; ".join(real) + "). Uninstall one of them: `pip uninstall ember-mxnet` "
            "removes the alias.")
    import ember
    mod = _MXNetModule(module_name, "MXNet 1.x API, provided by ember")
    mod.__version__ = API_VERSION
    mod.__path__ = []            # a package, so that `import mxnet.gluon` asks the finders
    mod.__ember_version__ = ember.__version__
    current = sys.modules.get(module_name)
    if current is not None:
        mod.__file__ = getattr(current, "__file__", None)
        mod.__spec__ = getattr(current, "__spec__", None)
    for key in ("nd", "sym", "mod", "init", "np"):
        setattr(mod, key, getattr(ember, key))
    sys.modules[module_name] = mod
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
    # submodules ember has already imported get their mxnet names at once
    for name, m in list(sys.modules.items()):
        if name.startswith("ember.") and m is not None:
            sys.modules.setdefault("mxnet." + name[len("ember."):], m)
    return mod


_INIT = f'''{MARKER}
"""MXNet 1.x API provided by ember (`pip uninstall ember-mxnet` removes this alias)."""
from ember.mxnet_alias import activate as _activate

_activate(__name__)
'''


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def install(target: str | os.PathLike | None = None) -> Path:
    """Write the ``mxnet`` alias package (and its ``ember_mxnet`` dist-info) into ``target``
    (default: this interpreter's site-packages). Refuses if a real MXNet is importable."""
    import ember
    dest = Path(target) if target is not None else _site_packages()
    search = [str(dest)] + [p for p in sys.path if Path(p or ".").resolve() != dest.resolve()]
    real = real_mxnet_locations(search)
    if real:
        raise AliasError("a real MXNet is installed (" + "; ".join(real) + "): the ember "
                         "'mxnet' alias would shadow it. Uninstall MXNet first.")
    pkg = dest / "mxnet"
    pkg.mkdir(parents=True, exist_ok=True)
    tmp = pkg / "__init__.py.tmp"
    tmp.write_text(_INIT, encoding="utf-8")
    os.replace(tmp, pkg / "__init__.py")
    info = dest / f"{DIST_NAME}-{ember.__version__}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: ember-mxnet\nVersion: {ember.__version__}\n"
        "Summary: the mxnet import name for ember (MXNet 1.x API level "
        f"{API_VERSION})\n", encoding="utf-8")
    (info / "INSTALLER").write_text("ember\n", encoding="utf-8")
    (info / "RECORD").write_text(
        f"mxnet/__init__.py,,\n{info.name}/METADATA,,\n{info.name}/INSTALLER,,\n"
        f"{info.name}/RECORD,,\n", encoding="utf-8")
    return pkg


def uninstall(target: str | os.PathLike | None = None) -> bool:
    """Remove the alias from ``target`` (default site-packages); False if it was not there."""
    dest = Path(target) if target is not None else _site_packages()
    pkg = dest / "mxnet"
    if not _is_alias_dir(pkg):
        return False
    for f in pkg.rglob("*"):
        if f.is_file():
            f.unlink()
    for d in sorted((p for p in pkg.rglob("*") if p.is_dir()), reverse=True):
        d.rmdir()
    pkg.rmdir()
    for info in dest.glob(f"{DIST_NAME}-*.dist-info"):
        for f in info.iterdir():
            f.unlink()
        info.rmdir()
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m ember.mxnet_alias install|uninstall|status [--target DIR]``."""
    ap = argparse.ArgumentParser(prog="ember mxnet-alias", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["install", "uninstall", "status"])
    ap.add_argument("--target", help="directory to install into (default: site-packages)")
    args = ap.parse_args(argv)
    try:
        if args.action == "install":
            print(f"installed the mxnet alias (MXNet {API_VERSION} API) at {install(args.target)}")
        elif args.action == "uninstall":
            print("removed" if uninstall(args.target) else "the mxnet alias is not installed")
        else:
            dest = Path(args.target) if args.target else _site_packages()
            print("installed" if _is_alias_dir(dest / "mxnet") else "not installed")
    except AliasError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
