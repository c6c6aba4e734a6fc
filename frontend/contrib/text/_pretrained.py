"""Finding a pretrained embedding file on this machine: ember never downloads one.

MXNet keeps them in ``<embedding_root>/<embedding class, lower case>/`` (``embedding_root``
is ``$MXNET_HOME/embeddings``, default ``~/.mxnet/embeddings``) and fetches the archive there
when the file is missing. ember looks, in order, in ``<embedding_root>/<class>/``,
``<embedding_root>/`` itself, ``$EMBER_DATA/embeddings/<class>/``,
``$MXNET_HOME/embeddings/<class>/`` and ``~/.mxnet/embeddings/<class>/``; in each it takes the
file, or extracts it from the archive MXNet would have downloaded when that is there. When
neither is anywhere it raises an ``MXNetError`` naming the file and every folder it looked in.
"""
from __future__ import annotations

import os
import shutil
import zipfile

from ember.base import MXNetError
from ember.gluon.model_zoo.model_store import _sha1


def default_root() -> str:
    """MXNet's default ``embedding_root``: ``$MXNET_HOME/embeddings`` or
    ``~/.mxnet/embeddings``, read when called."""
    home = os.environ.get("MXNET_HOME")
    base = os.path.expanduser(home) if home else os.path.join(os.path.expanduser("~"), ".mxnet")
    return os.path.join(base, "embeddings")


def search_dirs(embedding_root: str | None, namespace: str) -> list[str]:
    """The folders a pretrained file of embedding ``namespace`` is looked for in, in order."""
    root = os.path.expanduser(default_root() if embedding_root is None else embedding_root)
    dirs = [os.path.join(root, namespace), root]
    if os.environ.get("EMBER_DATA"):
        dirs.append(os.path.join(os.path.expanduser(os.environ["EMBER_DATA"]), "embeddings",
                                 namespace))
    dirs.append(os.path.join(default_root(), namespace))
    dirs.append(os.path.join(os.path.expanduser("~"), ".mxnet", "embeddings", namespace))
    return list(dict.fromkeys(os.path.abspath(d) for d in dirs))


def _extract(archive: str, file_name: str, folder: str) -> str | None:
    """Extract the member called ``file_name`` (at any depth) of zip ``archive`` into
    ``folder``; None when the archive has no such member."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if os.path.basename(m) == file_name]
            if not members:
                return None
            target = os.path.join(folder, file_name)
            part = f"{target}.part{os.getpid()}"
            with zf.open(members[0]) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(part, target)     # never leaves a half-written file under the name
            return target
    except (OSError, zipfile.BadZipFile) as err:
        raise MXNetError(f"cannot extract {file_name} from {archive} into {folder}: {err}"
                         ) from err


def find(owner: str, namespace: str, file_name: str, embedding_root: str | None,
         archive: str | None = None, sha1: str | None = None, source: str = "") -> str:
    """The path of pretrained file ``file_name`` (extracted from ``archive`` if only that is
    found). ``owner`` names the embedding in errors; ``sha1``, when given, must match the
    file's SHA-1; ``source`` says where the file can be had."""
    dirs = search_dirs(embedding_root, namespace)
    archive = archive if archive and archive != file_name else None
    for folder in dirs:
        path = os.path.join(folder, file_name)
        if not os.path.isfile(path) and archive and os.path.isfile(os.path.join(folder,
                                                                                archive)):
            path = _extract(os.path.join(folder, archive), file_name, folder) or path
        if os.path.isfile(path):
            if sha1 and _sha1(path) != sha1:
                raise MXNetError(f"{owner}: {path} is not the expected {file_name} (its SHA-1 "
                                 f"is {_sha1(path)}, expected {sha1}): the file is damaged or "
                                 "another version; ember does not download it again, replace "
                                 "it.")
            return path
    wanted = file_name + (f" (or its archive {archive})" if archive else "")
    where = "\n".join(f"  {d}" for d in dirs)
    hint = f" (from {source})" if source else ""
    raise MXNetError(f"{owner}: cannot find the pretrained embedding file {wanted} in any "
                     f"of:\n{where}\nember does not download pretrained embeddings: put "
                     f"{file_name}{hint} into {dirs[0]} (where MXNet keeps it) or pass "
                     "embedding_root= the folder holding it.")
