"""``ember launch -n N train.py``: start a data-parallel job through MPI's own launcher.

It runs ``mpiexec -n N <this python> train.py ...`` with the ``mpiexec`` that belongs to
the MPI library mpi4py loads (``$EMBER_MPIEXEC``, else the one installed beside this
Python by ``pip install 'ember[dist]'``, else the first on ``PATH``), passes a hostfile
through in that launcher's own spelling (MPICH's ``-f``, Open MPI's ``--hostfile``), and
lets Open MPI run as root and place more ranks than cores on one machine (it refuses both
by default). The launcher ends every rank when one fails; the exit status is the job's,
with a line saying which failure it was.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from ember.base import MXNetError

from ._mpi import INSTALL_HINT


def find_mpiexec() -> str:
    """The MPI launcher to use (see the module docstring)."""
    explicit = os.environ.get("EMBER_MPIEXEC")
    if explicit:
        return explicit
    for name in ("mpiexec", "mpirun"):
        beside = Path(sys.executable).parent / name
        if beside.exists():
            return str(beside)
    for name in ("mpiexec", "mpirun"):
        found = shutil.which(name)
        if found:
            return found
    raise MXNetError(f"ember launch: no MPI launcher (mpiexec) found: {INSTALL_HINT} "
                     "installs one, or set $EMBER_MPIEXEC")


def flavor(mpiexec: str) -> str:
    """'openmpi', 'mpich' (Hydra: MPICH, Intel MPI) or 'unknown', from ``--version``."""
    try:
        text = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if "Open MPI" in text or "OpenRTE" in text or "prte" in text.lower():
        return "openmpi"
    if "HYDRA" in text or "MPICH" in text or "Intel" in text:
        return "mpich"
    return "unknown"


def command(n: int, program: list[str], hostfile: str | None = None,
            mpiexec: str | None = None, kind: str | None = None) -> tuple[list, dict]:
    """The launcher's command line and environment for ``program`` (a script and its
    arguments, or ``-m module ...``) on ``n`` ranks."""
    mpiexec = mpiexec or find_mpiexec()
    kind = kind or flavor(mpiexec)
    env = dict(os.environ)
    cmd = [mpiexec, "-n", str(n)]
    if kind == "openmpi":
        if os.geteuid() == 0:  # Open MPI refuses root unless told twice
            env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
            env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        if hostfile is None:
            cmd.append("--oversubscribe")
    if hostfile is not None:
        if not Path(hostfile).is_file():
            raise MXNetError(f"ember launch: hostfile {hostfile!r} does not exist")
        cmd += ["--hostfile" if kind == "openmpi" else "-f", hostfile]
    return cmd + [sys.executable, *program], env


def describe(rc: int) -> str:
    """Words for a launcher's exit status."""
    sig = rc - 128 if rc > 128 else -rc if rc < 0 else rc if rc in (9, 15, 6, 11) else 0
    if sig:
        try:
            return f"a rank ended by signal {sig} ({signal.Signals(sig).name})"
        except ValueError:
            pass
    return f"exit status {rc}"


def launch(n: int, program: list[str], hostfile: str | None = None) -> int:
    """Run the job; the launcher's exit status (0 when every rank succeeded)."""
    if n < 1:
        raise MXNetError(f"ember launch: -n must be at least 1, got {n}")
    if not program:
        raise MXNetError("ember launch: give the training script to run")
    cmd, env = command(n, program, hostfile)
    try:
        rc = subprocess.run(cmd, env=env).returncode
    except KeyboardInterrupt:
        return 130
    if rc != 0:
        print(f"ember launch: the job failed ({describe(rc)}); every rank was stopped. "
              f"The failing rank's messages are above. Command: {' '.join(cmd)}",
              file=sys.stderr)
    return rc
