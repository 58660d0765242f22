"""The wheel and the sdist build, and the wheel works in a fresh environment.

`python -m build --no-isolation` (offline: the build backend is this
environment's setuptools) builds both from a copy of the source tree. The
wheel is then installed with `pip install --no-deps` into a new virtual
environment created with `--system-site-packages`, so TensorFlow and the
other dependencies come from this environment and nothing is downloaded.
In that environment, run from a directory outside the repository:
`import keras_lth` resolves to the installed wheel, `keras-lth bench --list`
runs, and the embedded MNIST loads and trains a step, both with the optional
extras (tfmot, tf_keras, keras-tuner, tensorflow-datasets) made
unimportable by a `sys.meta_path` finder and, without it, without importing
any of them.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import venv
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONAL = ("tensorflow_model_optimization", "tf_keras", "keras_tuner", "tensorflow_datasets")
IGNORE = shutil.ignore_patterns(
    ".git",
    "build",
    "dist",
    "site",
    "runs",
    "docs",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    ".ruff_cache",
    ".benchmarks",
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    pytest.importorskip("build")
    tmp = tmp_path_factory.mktemp("packaging")
    src, out = tmp / "src", tmp / "dist"
    shutil.copytree(REPO, src, ignore=IGNORE)
    # sdist first, then the wheel built from the sdist (what `python -m build` does)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = out.glob("keras_lth-*.whl")
    (sdist,) = out.glob("keras_lth-*.tar.gz")
    return wheel, sdist


@pytest.fixture(scope="module")
def env(dist, tmp_path_factory):
    """(python, bin dir, work dir) of a fresh venv with the wheel installed."""
    wheel, _ = dist
    tmp = tmp_path_factory.mktemp("venv")
    root = tmp / "env"
    venv.create(root, system_site_packages=True, with_pip=False)
    bindir = root / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    # pip comes from the system site-packages and installs into the venv's prefix;
    # --ignore-installed: this environment may hold keras-lth as an editable install
    done = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            "--disable-pip-version-check",
            str(wheel),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    work = tmp / "work"
    work.mkdir()
    return python, bindir, work


def fresh_environ():
    """This process's environment without what would make the child less fresh."""
    environ = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    environ.pop("TF_USE_LEGACY_KERAS", None)  # set by importing tfmot in this process
    return environ


def run_in(env, code, *args):
    python, _, work = env
    environ = fresh_environ()
    done = subprocess.run(
        [str(python), "-c", textwrap.dedent(code), *args],
        cwd=work,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_wheel_holds_the_package_metadata_and_license(dist):
    wheel, _ = dist
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = z.read(meta).decode()
    assert "keras_lth/__init__.py" in names and "keras_lth/bench/cli.py" in names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "docs/"))]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    for url in ("Documentation", "Repository", "Issues", "Changelog"):
        assert f"Project-URL: {url}, https://" in metadata, url
    assert "Classifier: Programming Language :: Python :: 3" in metadata
    assert "Provides-Extra: tuner" in metadata
    with open(os.path.join(REPO, "keras_lth", "__init__.py")) as f:
        (version,) = [l.split('"')[1] for l in f if l.startswith("__version__")]
    assert f"\nVersion: {version}\n" in metadata


def test_sdist_holds_the_sources_license_and_readme(dist):
    _, sdist = dist
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {"LICENSE", "README.md", "pyproject.toml", "keras_lth/__init__.py"} <= names


BLOCKER = """
import importlib.abc
import sys

BLOCKED = set(sys.argv[1].split(","))


class Blocker(importlib.abc.MetaPathFinder):
    \"\"\"Makes the optional extras unimportable, as if not installed.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, Blocker())
"""

USE = """
import json
import os
import sys

import keras_lth as lth

assert os.path.realpath(lth.__file__).startswith(os.path.realpath(sys.prefix)), lth.__file__
train, val, test, info = lth.data.mnist()
x, y = next(iter(train))
model = lth.models.lenet_300_100(num_classes=info.num_classes)
model.compile("adam", "sparse_categorical_crossentropy")
model.train_on_batch(x, y)
try:
    import keras_lth.tuner
    tuner = "importable"
except ImportError as e:
    tuner = str(e)
optional = sys.argv[1].split(",")
print(json.dumps({
    "file": lth.__file__,
    "version": lth.__version__,
    "num_train": info.num_train,
    "batch": list(x.shape),
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in optional),
    "tuner": tuner,
}))
"""


def test_import_and_embedded_mnist_work_without_the_optional_extras(env):
    out = json.loads(run_in(env, BLOCKER + USE, ",".join(OPTIONAL)).splitlines()[-1])
    assert out["num_train"] == 3500 and out["batch"] == [60, 784]
    assert out["loaded"] == []
    assert 'pip install "keras-lth[tuner]"' in out["tuner"]


def test_import_keras_lth_does_not_import_the_optional_extras(env):
    """With every extra installed (this environment has them), none is imported.

    tfmot above all: importing it sets `TF_USE_LEGACY_KERAS=1` for the process
    and its children, which would turn `tf.keras` into tf_keras.
    """
    code = "import os, sys, json\nimport keras_lth\nimport keras_lth.data\n" + (
        "assert 'TF_USE_LEGACY_KERAS' not in os.environ\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in sys.argv[1].split(','))))"
    )
    assert json.loads(run_in(env, code, ",".join(OPTIONAL)).splitlines()[-1]) == []


def test_console_script_lists_the_methods(env):
    _, bindir, work = env
    script = bindir / ("keras-lth.exe" if os.name == "nt" else "keras-lth")
    done = subprocess.run(
        [str(script), "bench", "--list"],
        cwd=work,
        env=fresh_environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for method in ("dense", "lth", "imp-finetune", "tfmot"):
        assert method in done.stdout
    # the script runs the installed copy, not this checkout
    with open(script) as f:
        assert str(bindir.parent) in f.readline()
