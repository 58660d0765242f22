"""Computes tfmot's own pruning masks for `tests/test_callbacks.py`.

Importing `tensorflow_model_optimization` switches `tf.keras` to legacy Keras
for the whole process, so the tests never do it themselves: they start this
script with `TF_USE_LEGACY_KERAS=1`, send a JSON list of cases on stdin
(`{"weights": [...], "shape": [...], "sparsity": s}`) and read one JSON list
of 0/1 masks on stdout. Each mask is what
`tfmot.sparsity.keras.prune_low_magnitude` computes for those weights at that
`ConstantSparsity` (`pruning_impl.Pruning._update_mask`, the function its
wrapper calls at every pruning step).

    TF_USE_LEGACY_KERAS=1 python tests/scripts/tfmot_masks.py < cases.json
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise SystemExit("run with TF_USE_LEGACY_KERAS=1 (it imports tfmot)")
    import numpy as np
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.sparsity.keras import (
        pruning_impl,
        pruning_schedule,
    )

    out = []
    for case in json.load(sys.stdin):
        schedule = pruning_schedule.ConstantSparsity(case["sparsity"], begin_step=0)
        impl = pruning_impl.Pruning(
            training_step_fn=lambda: tf.constant(1, tf.int64),
            pruning_vars=[],
            pruning_schedule=schedule,
            block_size=(1, 1),
            block_pooling_type="AVG",
        )
        weights = tf.constant(np.asarray(case["weights"], "float32").reshape(case["shape"]))
        _, mask = impl._update_mask(weights)
        out.append(np.asarray(mask).reshape(-1).astype(int).tolist())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
