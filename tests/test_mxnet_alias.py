"""The `mxnet` alias package: ember under MXNet's import name, never shadowing a real MXNet."""
import os
import subprocess
import sys

import pytest

from ember import mxnet_alias


def _run(code, *path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in path))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.fixture(scope="module")
def alias_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("site")
    mxnet_alias.install(d)
    return d


def test_module_identity_and_versions(alias_dir):
    code = """
import mxnet as mx, ember
assert mx.__version__ == '1.9.1', mx.__version__
assert ember.__version__ != '1.9.1'
assert mx.nd is ember.nd and mx.ndarray is ember.ndarray and mx.sym is ember.sym
assert mx.gluon is ember.gluon and mx.autograd is ember.autograd
import mxnet.gluon.model_zoo.vision as v, ember.gluon.model_zoo.vision as ev
assert v is ev and ev.__name__ == 'ember.gluon.model_zoo.vision'
assert ev.__spec__.name == 'ember.gluon.model_zoo.vision'
from mxnet.gluon import nn
from mxnet.ndarray import contrib
assert nn is ember.gluon.nn and contrib is ember.ndarray.contrib
from mxnet.gluon.data.vision import transforms
assert transforms is ember.gluon.data.vision.transforms
assert mx.cpu() == ember.cpu()
x = mx.nd.ones((2, 3))
assert type(x) is ember.nd.NDArray and float(x.sum().asscalar()) == 6.0
print('ok')
"""
    res = _run(code, alias_dir)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_unknown_submodule_is_a_plain_import_error(alias_dir):
    res = _run("import mxnet.no_such_module", alias_dir)
    assert res.returncode != 0
    assert "No module named 'mxnet.no_such_module'" in res.stderr


def test_refuses_to_shadow_real_mxnet(alias_dir, tmp_path):
    real = tmp_path / "real"
    (real / "mxnet").mkdir(parents=True)
    (real / "mxnet" / "__init__.py").write_text("__version__ = '1.9.1'\n")
    res = _run("import mxnet", alias_dir, real)
    assert res.returncode != 0
    assert "refuses to shadow a real MXNet" in res.stderr and str(real) in res.stderr
    with pytest.raises(mxnet_alias.AliasError, match="real MXNet is installed"):
        mxnet_alias.install(real)


def test_real_mxnet_distribution_is_detected(tmp_path):
    info = tmp_path / "mxnet-1.9.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mxnet\nVersion: 1.9.1\n")
    found = mxnet_alias.real_mxnet_locations([str(tmp_path)])
    assert found == ["mxnet 1.9.1 (an installed distribution)"]
    assert mxnet_alias.real_mxnet_locations([str(tmp_path / "empty")]) == []


def test_install_is_recorded_and_uninstall_removes_it(tmp_path):
    pkg = mxnet_alias.install(tmp_path)
    assert (pkg / "__init__.py").read_text().startswith(mxnet_alias.MARKER)
    infos = list(tmp_path.glob("ember_mxnet-*.dist-info"))
    assert len(infos) == 1 and "mxnet/__init__.py" in (infos[0] / "RECORD").read_text()
    # the alias itself is not mistaken for a real MXNet
    assert mxnet_alias.real_mxnet_locations([str(tmp_path)]) == []
    assert mxnet_alias.uninstall(tmp_path) is True
    assert list(tmp_path.iterdir()) == []
    assert mxnet_alias.uninstall(tmp_path) is False


def test_command_line(tmp_path):
    assert mxnet_alias.main(["install", "--target", str(tmp_path)]) == 0
    assert mxnet_alias.main(["status", "--target", str(tmp_path)]) == 0
    assert mxnet_alias.main(["uninstall", "--target", str(tmp_path)]) == 0
    assert not (tmp_path / "mxnet").exists()
