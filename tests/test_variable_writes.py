"""`assign_at`: a variable written at some positions, by a scatter or a full round trip."""

import keras
import numpy as np
import pytest

from keras_lth import variable_writes
from keras_lth.variable_writes import SCATTER_SHARE, assign_at

# The backend-agnostic tests are marked `jax`: they also run under KERAS_BACKEND=jax.


def _positions(shape, count, seed=0):
    rng = np.random.default_rng(seed)
    positions = np.zeros(shape, bool)
    positions.flat[rng.choice(positions.size, count, replace=False)] = True
    return positions


@pytest.mark.jax
@pytest.mark.parametrize("shape", [(40, 30), (12,), (3, 3, 4, 5)])
@pytest.mark.parametrize("share", ["few", "many", "all"])
@pytest.mark.parametrize("values", ["scalar", "array"])
def test_assign_at_writes_the_positions_and_nothing_else(shape, share, values):
    rng = np.random.default_rng(1)
    before = rng.normal(size=shape).astype("float32")
    variable = keras.Variable(before)
    size = int(np.prod(shape))
    count = {"few": max(1, size // (2 * SCATTER_SHARE)), "many": size // 2, "all": size}[share]
    positions = _positions(shape, count)
    new = np.float32(-2.5) if values == "scalar" else rng.normal(size=shape).astype("float32")
    assign_at(variable, positions, new)
    after = keras.ops.convert_to_numpy(variable)
    np.testing.assert_array_equal(after, np.where(positions, new, before))
    assert keras.backend.standardize_dtype(variable.dtype) == "float32"


@pytest.mark.jax
def test_assign_at_casts_to_the_variables_dtype_and_broadcasts():
    variable = keras.Variable(np.ones((6, 4), "float16"))
    positions = _positions((6, 4), 2)
    assign_at(variable, positions, np.arange(4, dtype="float64"))  # one row, broadcast
    after = keras.ops.convert_to_numpy(variable)
    assert after.dtype == np.float16
    np.testing.assert_array_equal(
        after, np.where(positions, np.broadcast_to(np.arange(4.0), (6, 4)), 1.0)
    )


@pytest.mark.jax
def test_assign_at_a_scalar_variable():
    variable = keras.Variable(np.float32(3.0))
    assign_at(variable, np.array(False), 7.0)
    assert float(keras.ops.convert_to_numpy(variable)) == 3.0
    assign_at(variable, np.array(True), 7.0)
    assert float(keras.ops.convert_to_numpy(variable)) == 7.0


@pytest.mark.jax
def test_assign_at_no_position_writes_nothing(monkeypatch):
    variable = keras.Variable(np.ones((5, 5), "float32"))
    writes = []
    monkeypatch.setattr(type(variable), "assign", lambda self, v: writes.append(v))
    monkeypatch.setattr(variable_writes, "_scatter_target", lambda v: writes.append(v))
    assign_at(variable, np.zeros((5, 5), bool), 0.0)
    assert writes == []


@pytest.mark.jax
def test_assign_at_refuses_positions_of_another_shape():
    variable = keras.Variable(np.ones((5, 4), "float32"), name="k")
    with pytest.raises(ValueError, match=r"`positions` of shape \(4, 5\).*expected its shape"):
        assign_at(variable, np.ones((4, 5), bool), 0.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), 1.0)


def test_a_few_positions_are_scattered_and_many_are_not(monkeypatch):
    variable = keras.Variable(np.zeros((64, 64), "float32"))
    full_writes = []
    original = type(variable).assign
    monkeypatch.setattr(
        type(variable),
        "assign",
        lambda self, v: (full_writes.append(self), original(self, v))[1],
    )
    few = _positions((64, 64), 64 * 64 // SCATTER_SHARE)
    assign_at(variable, few, 1.0)
    assert full_writes == []  # written in place by the scatter
    many = _positions((64, 64), 64 * 64 // SCATTER_SHARE + 1, seed=2)
    assign_at(variable, many, 2.0)
    assert full_writes == [variable]
    after = keras.ops.convert_to_numpy(variable)
    np.testing.assert_array_equal(after, np.where(many, 2.0, np.where(few, 1.0, 0.0)))


def test_a_mirrored_variable_is_written_on_every_replica(mirrored_strategy):
    with mirrored_strategy.scope():
        variable = keras.Variable(np.zeros((32, 32), "float32"))
    assert variable_writes._scatter_target(variable) is None  # assigned whole
    positions = _positions((32, 32), 3)
    assign_at(variable, positions, 5.0)
    for replica in variable.value.values:
        np.testing.assert_array_equal(replica.numpy(), np.where(positions, 5.0, 0.0))
