"""Source locations of traced nodes name the user's file and line: not ember's own frames,
nor runpy (``python -m``), importlib or the ``ember`` console script that started it."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ember
from ember.symbol import userloc

NET = textwrap.dedent('''\
    from ember.gluon import nn


    class Net(nn.HybridBlock):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.fc = nn.Dense(3)

        def hybrid_forward(self, F, x):
            h = self.fc(x)
            return F.relu(h) * 2


    class Bad(nn.HybridBlock):
        def hybrid_forward(self, F, x):
            return F.dot(x, x)


    def layers():
        net = nn.HybridSequential()
        net.add(nn.Dense(3), nn.Activation("relu"))
        return net
    ''')

SCRIPT = textwrap.dedent('''\
    import ember as mx
    from ember.gluon import nn

    net = nn.HybridSequential()
    net.add(nn.Dense(3), nn.Activation("relu"))
    net.initialize()
    net.hybridize()
    net(mx.nd.ones((2, 4)))
    ''')


def run(argv, cwd, **env):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, **env})


def locs(text):
    return [ln.rpartition("  # ")[2] for ln in text.splitlines() if " = " in ln]


@pytest.fixture
def user_files(tmp_path):
    (tmp_path / "locnet.py").write_text(NET)
    (tmp_path / "locscript.py").write_text(SCRIPT)
    return tmp_path


def test_python_m_script_names_its_line(user_files):
    proc = run([sys.executable, "-m", "locscript"], user_files, EMBER_DUMP="infer_shapes")
    assert proc.returncode == 0, proc.stderr
    assert locs(proc.stderr) == ["locscript.py:8", "locscript.py:8"]


def test_cli_through_python_m_names_the_users_lines(user_files):
    proc = run([sys.executable, "-m", "ember", "ir", "locnet:Net", "--input-shape", "2,4",
                "--after", "trace"], user_files)
    assert proc.returncode == 0, proc.stderr
    assert locs(proc.stdout) == ["locnet.py:10", "locnet.py:11", "locnet.py:11"]
    # ember's own layers only: no frame of the user's is on the stack, so no location
    proc = run([sys.executable, "-m", "ember", "ir", "locnet:layers", "--input-shape", "2,4",
                "--after", "trace"], user_files)
    assert proc.returncode == 0, proc.stderr
    assert "runpy" not in proc.stdout and "  # " not in proc.stdout
    proc = run([sys.executable, "-m", "ember", "ir", "locnet:Bad", "--input-shape", "2,4"],
               user_files)
    assert proc.returncode == 1 and "(at locnet.py:16)" in proc.stderr, proc.stderr


def test_console_script_names_the_users_lines(user_files):
    script = Path(sys.executable).with_name("ember")
    if not script.is_file():
        pytest.skip("the ember console script is not installed next to python")
    proc = run([str(script), "ir", "locnet:Net", "--input-shape", "2,4", "--after", "trace"],
               user_files)
    assert proc.returncode == 0, proc.stderr
    assert locs(proc.stdout) == ["locnet.py:10", "locnet.py:11", "locnet.py:11"]
    proc = run([str(script), "ir", "locnet:layers", "--input-shape", "2,4", "--after",
                "trace"], user_files)
    assert proc.returncode == 0 and "  # " not in proc.stdout, proc.stdout


def test_which_frames_are_internal():
    assert userloc.is_internal("<frozen runpy>")
    assert userloc.is_internal("<frozen importlib._bootstrap>")
    assert userloc.is_internal(ember.__file__)
    assert userloc.is_internal(ember.ir.__file__)
    from ember.cli import main
    assert userloc.is_internal("/usr/bin/ember", {"main": main}, "<module>")
    assert not userloc.is_internal("/usr/bin/ember", {"main": main}, "helper")
    assert not userloc.is_internal(__file__, globals(), "<module>")
    assert not userloc.is_internal("<stdin>") and not userloc.is_internal("<string>")


def test_traced_nodes_and_errors_in_process():
    import ember as mx
    from ember.gluon import nn

    class Twice(nn.HybridBlock):
        def hybrid_forward(self, F, x):
            return F.dot(x, x)

    net = Twice()
    net.hybridize()
    line = sys._getframe().f_lineno + 2
    with pytest.raises(mx.base.MXNetError, match=rf"test_userloc\.py:{line - 6}"):
        net(mx.nd.ones((2, 3)))
    assert userloc.user_loc() == f"test_userloc.py:{sys._getframe().f_lineno}"
