"""Shared test set-up.

- Quiet TensorFlow, fixed seeds, two logical CPU devices (`"/cpu:0"`,
  `"/cpu:1"`) for `MirroredStrategy` tests.
- `tf.keras` is resolved (to Keras 3) before any test imports tfmot: importing
  `tensorflow_model_optimization` sets `TF_USE_LEGACY_KERAS=1`, which would
  otherwise turn `tf.keras` into legacy tf_keras for the whole session. The
  `tfmot` fixture also takes that variable back out of `os.environ` so child
  processes started by later tests are not affected.
"""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_ = tf.keras.layers  # pin tf.keras to Keras 3 before tfmot can be imported

# Two logical CPU devices, so `tf.distribute.MirroredStrategy` tests run with
# two replicas on any machine. This must happen before TensorFlow creates its
# devices, i.e. before any test runs an op.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def tfmot():
    """`tensorflow_model_optimization`, imported without leaking its env var."""
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    module = pytest.importorskip("tensorflow_model_optimization")
    if before is None:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = before
    return module


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One `MirroredStrategy` over the two logical CPUs for the whole session.

    TensorFlow's collective ops share process-wide instance keys: a second
    strategy object in the same process can pair its all-reduces with the
    first one's and fail with "Shape mismatch in the collective instance".
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture
def run_without_keras_lth(tmp_path):
    """Runs a script in a fresh interpreter in `tmp_path`; it must print LOADED-OK.

    The scripts load saved models with plain Keras and assert that
    `keras_lth` was never imported. tfmot's `TF_USE_LEGACY_KERAS` is dropped
    from the environment; `env` adds variables.
    """

    def run(script, timeout=180, **env):
        environ = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        environ.update(TF_CPP_MIN_LOG_LEVEL="3", **env)
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "LOADED-OK" in result.stdout

    return run
