"""Compaction: physically removing pruned units (neurons, filters) from a model.

`compact(model)` works on the graph of the stripped model (`strip(model)`,
nested models inlined) in three steps:

1. **Constants.** A unit whose effective kernel column (filter) is all zeros
   outputs a constant, `activation(effective bias)`, the same at every
   position and for every input. Each tensor's last-axis features are
   followed through the graph with their constant value (or "not
   constant"): through layers that act feature by feature (activations,
   dropout, `BatchNormalization`, pooling, cropping, up-sampling), merges
   (`Add`, ...), `Concatenate` and `Flatten`, and into the next layers with a
   kernel (a unit that only reads constants is itself constant).
2. **What can go.** The features of the graph are grouped by what must be
   removed together: a producer's unit, everything computed from it feature
   by feature, the features an `Add` sums, a depthwise channel and its
   outputs, the inputs of a layer called twice. A group goes when every one
   of its features is constant and nothing keeps it: a model output, a layer
   that `compact` cannot narrow, a depthwise or separable convolution with
   padding "same" reading a nonzero constant.
3. **Rebuild.** Each layer gets its kept units; the constant contribution of
   a removed input feature is folded into the reading layer's bias
   (`Dense`, a convolution with padding "valid" or a 1x1 kernel). A
   convolution with padding "same" (or "causal", or a transposed one) sees
   zero padding at the borders, so a nonzero constant channel there is not a
   bias: `compact` keeps one of those channels (the representative) and adds
   to its kernel slice the slices of the others, scaled by their constants'
   ratio, which is exact because every such channel is the same map up to a
   factor. Removed zero channels need nothing.

The result is a plain Keras model that reproduces the original at inference
(`training=False`).
"""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np
from keras import ops

from keras_lth.conversion import check_graph_model, is_graph_model
from keras_lth.export import plain_config, strip
from keras_lth.layers import masked_layers

L = keras.layers
_CONV = (L.Conv1D, L.Conv2D, L.Conv3D)
_CONV_T = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
# Layers that compute each last-axis feature from the same feature alone, at
# inference, without weights: a constant feature stays constant when the
# evaluation on a constant map says so (zero padding, for one, does not keep
# a nonzero constant).
_FEATUREWISE = tuple(
    getattr(L, name)
    for name in (
        "Activation ReLU LeakyReLU ELU Dropout SpatialDropout1D SpatialDropout2D "
        "SpatialDropout3D GaussianDropout GaussianNoise AlphaDropout ActivityRegularization "
        "Identity MaxPooling1D MaxPooling2D MaxPooling3D AveragePooling1D AveragePooling2D "
        "AveragePooling3D GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D "
        "GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D Cropping1D "
        "Cropping2D Cropping3D ZeroPadding1D ZeroPadding2D ZeroPadding3D UpSampling1D "
        "UpSampling2D UpSampling3D"
    ).split()
    if hasattr(L, name)
)
_MERGES = (L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum, L.Multiply)
# Activations applied element by element (softmax, glu, sparsemax mix units).
_ELEMENTWISE = {
    getattr(keras.activations, name)
    for name in (
        "linear relu relu6 leaky_relu elu selu celu gelu silu swish sigmoid hard_sigmoid "
        "hard_silu hard_swish tanh hard_tanh softplus softsign exponential mish log_sigmoid "
        "squareplus sparse_plus tanh_shrink soft_shrink hard_shrink threshold"
    ).split()
    if hasattr(keras.activations, name)
}
# Spatial size used to evaluate a layer on a constant map when the tensor's
# size is not static.
_EVAL_SIZE = 16


def compact(model, strict: bool = False):
    """A smaller plain-Keras copy of `model` without its pruned units.

    Removes every dead unit that can go exactly: neurons of `Dense` layers,
    filters (output channels) of convolutions, output dimensions of an
    `Embedding`, with the matching inputs of the layers that read them. A
    unit is dead when its effective kernel column (filter) is all zeros,
    whether neuron pruning or weight pruning emptied it. A dead unit still
    outputs a constant, `activation(effective bias)` (through
    `BatchNormalization` and activations: 0 for a pruned ReLU unit whose bias
    is pruned too, but generally not 0 after a `BatchNormalization`); that
    constant is folded into the bias of the layers that read it, so the
    compacted model predicts what `model` predicts (at float32 precision,
    at inference).

    Supported (channels-last data, exact Keras classes, in a Sequential or
    functional model, nested models included):

    - Units removed from: `Dense`, `Conv1D`/`2D`/`3D` (`groups=1`), their
      transposes, `SeparableConv1D`/`2D` (its filters), `DepthwiseConv1D`/
      `2D` (a channel and its `depth_multiplier` outputs together, when the
      channel is dead upstream too), `Embedding` (output dimensions).
    - Between them: activations (element-wise ones), dropout and noise
      layers, `BatchNormalization` (last axis; its statistics are sliced),
      max/average pooling, global pooling, cropping, zero padding and
      up-sampling (kept constant only if they keep it constant),
      `Flatten`, `Concatenate` (last axis), and `Add`/`Subtract`/`Average`/
      `Maximum`/`Minimum`/`Multiply`: a channel of a residual `Add` goes only
      if it is dead in every branch.
    - A constant folds into the bias of a `Dense` layer, of a convolution
      with padding "valid" or a kernel of size 1, and of a separable
      convolution with padding "valid". A convolution with padding "same"
      or "causal", or a transposed one, keeps one channel with a nonzero
      constant per input (the representative, into whose kernel slice the
      other nonzero constant channels are merged exactly); zero channels go
      freely. A depthwise or separable convolution with padding "same" keeps
      its nonzero constant input channels.

    Dead units are kept, and listed in one warning with the reason, where
    removing them would not be exact: read by a layer that `compact` cannot
    narrow (any layer not listed above: `Reshape`, `LayerNormalization`,
    attention, recurrent layers, `EinsumDense`, custom layers, channels-first
    layers...), joined by a merge to a unit that is not dead, read with
    different constants by a shared layer. The units of the model's outputs
    are always kept (not warned about), and so is at least one unit of each
    tensor. Layers that compact cannot narrow are copied as they are
    (stripped).

    Args:
        model: A built Sequential or functional model with at least one
            masked layer.
        strict: Raise a `ValueError` naming the layer instead of warning
            when a layer that `compact` cannot narrow keeps dead units.
            Defaults to `False`.

    Returns:
        A plain Keras model, loadable without `keras_lth`: a
        `keras.Sequential` when the graph is a chain (one input, one output,
        each layer called once on the previous one's output; nested models
        are inlined), a functional model otherwise. Its layers keep their names (a name
        that nested models repeat gets a suffix).

    Example:

    >>> model = keras_lth.prunable(keras.Sequential([
    ...     keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
    ...     keras.layers.Flatten(),
    ...     keras.layers.Dense(2, name="out"),
    ... ]))
    >>> conv = model.get_layer("conv")
    >>> mask = np.ones(conv.kernel_mask.shape, "float32")
    >>> mask[..., :2] = 0     # prune the first two filters
    >>> conv.set_masks(mask, conv.bias_mask_for(np.array([0, 0, 1, 1], bool)))
    >>> small = compact(model)
    >>> small.get_layer("conv").filters
    2
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Received an invalid value for `model`, expected a Sequential or "
            f"functional `keras.Model`. Received: {model!r} of type "
            f"{type(model).__name__}"
        )
    check_graph_model(
        model,
        "compact",
        "Build the small model by hand from plain layers, or make the model functional.",
    )
    if not model.built:
        raise ValueError(
            f"Expected a built model. Received: model '{model.name}' is not "
            "built: call it on an input (or give it an `Input`) first."
        )
    if not masked_layers(model):
        raise ValueError(
            "Expected a model with at least one masked layer (MaskedDense, "
            "MaskedConv2D, ..., or a model made by `keras_lth.prunable`). "
            f"Received: model '{model.name}' has none"
        )
    plain = strip(model)  # warns if a masked layer is out of its reach (it stays as it is)
    graph = _record(plain)
    plan = _Analysis(graph)
    plan.run()
    new = _rebuild(graph, plan, model)
    kept = plan.kept_dead_units()
    if kept:
        barrier = [k for k in kept if k[2]]
        if strict and barrier:
            name, count, _, reason = barrier[0]
            raise ValueError(
                f"`compact` cannot remove {count} dead unit(s) of layer "
                f"'{name}': {reason}. Received: strict=True"
            )
        warnings.warn(
            "`compact` kept dead units where removing them would not be exact: "
            + "; ".join(f"{count} of '{name}' ({reason})" for name, count, _, reason in kept),
            stacklevel=2,
        )
    return new


# ---------------------------------------------------------------------- #
# 1. The graph: every layer call, nested models inlined
# ---------------------------------------------------------------------- #
@dataclasses.dataclass
class _Call:
    layer: keras.layers.Layer
    args: tuple
    kwargs: dict
    outputs: object

    @property
    def inputs(self):
        return [t for t in keras.tree.flatten((self.args, self.kwargs)) if _is_tensor(t)]

    @property
    def output_list(self):
        return [t for t in keras.tree.flatten(self.outputs) if _is_tensor(t)]


@dataclasses.dataclass
class _Graph:
    calls: list
    inputs: object  # the top model's input structure
    outputs: object
    aliases: dict  # id(tensor) -> the tensor it stands for (nested models' inputs and outputs)

    def resolve(self, tensor):
        while id(tensor) in self.aliases:
            tensor = self.aliases[id(tensor)]
        return tensor


def _is_tensor(x):
    return isinstance(x, keras.KerasTensor)


def _record(model) -> _Graph:
    """Every layer call of `model`, in a topological order, nested models inlined.

    Goes through the public `clone_model(call_function=...)`: the layers (of
    our own stripped copy) are called again on fresh symbolic inputs, and
    each call is recorded.
    """
    calls, aliases = [], {}

    def walk(m):
        if isinstance(m, keras.Sequential):  # the same layers, seen as a graph
            graph = keras.Model(m.inputs[0], m.outputs[0], name=m.name)
        else:
            graph = keras.Model(m.input, m.output, name=m.name)

        def call_function(layer, *args, **kwargs):
            if is_graph_model(layer):
                # Its layers are recorded on fresh inputs that stand for the
                # outer tensors; the outer graph calls the model as a whole,
                # and its outputs stand for the inner ones.
                inner = walk(layer)
                outer = args[0] if len(args) == 1 else list(args)
                outer_inputs = [t for t in keras.tree.flatten(outer) if _is_tensor(t)]
                for a, b in zip(keras.tree.flatten(inner.input), outer_inputs):
                    aliases[id(a)] = b
                outputs = layer(*args, **kwargs)
                for a, b in zip(keras.tree.flatten(outputs), keras.tree.flatten(inner.output)):
                    aliases[id(a)] = b
                return outputs
            outputs = layer(*args, **kwargs)
            calls.append(_Call(layer, args, kwargs, outputs))
            return outputs

        return keras.models.clone_model(
            graph, clone_function=lambda layer: layer, call_function=call_function
        )

    top = walk(model)
    return _Graph(calls, top.input, top.output, aliases)


# ---------------------------------------------------------------------- #
# 2. The analysis
# ---------------------------------------------------------------------- #
@dataclasses.dataclass
class _Features:
    """The last-axis features of a tensor: their group nodes and constants."""

    nodes: np.ndarray  # int, one node per feature
    const: np.ndarray  # float64, NaN where the feature is not constant


class _Nodes:
    """Union-find over feature nodes: a class is removed or kept as a whole."""

    def __init__(self):
        self.parent = []
        self.nonconst = set()  # nodes seen with a value that is not constant
        self.vetoes = {}  # node -> (reason, is_barrier)
        self.nonconst_roots = set()  # filled by `finish`
        self.veto_roots = {}

    def new(self, n):
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n)

    def find(self, i):
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a, b):
        for i, j in zip(np.asarray(a).tolist(), np.asarray(b).tolist()):
            ri, rj = self.find(i), self.find(j)
            if ri != rj:
                self.parent[rj] = ri

    def mark(self, feats):
        self.nonconst.update(feats.nodes[np.isnan(feats.const)].tolist())

    def veto(self, nodes, reason, barrier=False):
        for n in np.asarray(nodes).tolist():
            self.vetoes.setdefault(n, (reason, barrier))

    def finish(self):
        """Freezes the classes: removal is decided per root from here on."""
        self.nonconst_roots = {self.find(n) for n in self.nonconst}
        self.veto_roots = {}
        for n, reason in self.vetoes.items():
            self.veto_roots.setdefault(self.find(n), reason)

    def veto_root(self, node, reason):
        self.veto_roots.setdefault(self.find(int(node)), (reason, False))

    def removed(self, nodes):
        roots = [self.find(n) for n in np.asarray(nodes).tolist()]
        return np.array(
            [r not in self.nonconst_roots and r not in self.veto_roots for r in roots], bool
        )


@dataclasses.dataclass
class _LayerState:
    kind: str
    inputs: list = dataclasses.field(default_factory=list)  # _Features per call
    outputs: list = dataclasses.field(default_factory=list)  # _Features per call
    out_nodes: np.ndarray | None = None
    const: np.ndarray | None = None  # input constants agreed by every call
    rep: int | None = None  # representative input feature (merge-type consumers)
    empty: np.ndarray | None = None  # units whose kernel column is all zeros


_PRODUCERS = ("dense", "conv", "conv_t", "depthwise", "separable")


class _Analysis:
    def __init__(self, graph):
        self.graph = graph
        self.nodes = _Nodes()
        self.info = {}  # id(tensor) -> _Features | None
        self.states = {}  # id(layer) -> _LayerState
        self.layers = {}  # id(layer) -> layer, in call order

    # -- step 1: constants and groups ----------------------------------- #
    def run(self):
        for t in keras.tree.flatten(self.graph.inputs):
            self.info[id(t)] = self._fresh(t)
        for call in self.graph.calls:
            self._call(call)
        for t in keras.tree.flatten(self.graph.outputs):
            feats = self._get(t)
            if feats is not None:
                self.nodes.veto(feats.nodes, "a model output")
        for lid, state in self.states.items():
            self._agree(self.layers[lid], state)
        self.nodes.finish()
        self._keep_one_per_tensor()
        for lid, state in self.states.items():
            self._choose_rep(self.layers[lid], state)

    def _get(self, tensor):
        return self.info.get(id(self.graph.resolve(tensor)))

    def _fresh(self, tensor):
        """Features of a tensor nothing is known about (a model input, a barrier's output)."""
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        n = tensor.shape[-1] if len(tensor.shape) else None
        if "float" not in dtype or n is None:
            return None
        feats = _Features(self.nodes.new(n), np.full(n, np.nan))
        self.nodes.mark(feats)
        return feats

    def _call(self, call):
        layer = call.layer
        state = self.states.get(id(layer))
        if state is None:
            state = self.states[id(layer)] = _LayerState(_kind(layer))
            self.layers[id(layer)] = layer
        ins = [self._get(t) for t in call.inputs]
        outs = call.output_list
        result = None
        if state.kind != "barrier" and len(outs) == 1:
            result = self._transfer(layer, state, call, ins, outs[0])
        if result is None:
            if state.kind != "barrier":
                # this call does not fit (e.g. an untracked input): the layer
                # becomes a barrier for every call
                state.kind = "barrier"
                for feats in state.inputs + state.outputs:
                    self._veto_barrier(layer, feats)
            for feats in ins:
                self._veto_barrier(layer, feats)
            for t in outs:
                self.info[id(t)] = self._fresh(t)
            return
        self.info[id(outs[0])] = result
        self.nodes.mark(result)
        state.outputs.append(result)

    def _veto_barrier(self, layer, feats):
        if feats is not None:
            self.nodes.veto(
                feats.nodes,
                f"read by '{layer.name}' ({type(layer).__name__}), which `compact` cannot narrow",
                barrier=True,
            )

    def _transfer(self, layer, state, call, ins, out):
        """The output features of one call, or None if the call does not fit."""
        kind = state.kind
        n_out = out.shape[-1] if len(out.shape) else None
        if kind == "embedding":
            if any(f is not None for f in ins):
                return None
            table = _np(layer.embeddings)
            state.out_nodes = _once(state.out_nodes, self.nodes, table.shape[1])
            const = np.where(np.all(table == 0, axis=0), 0.0, np.nan)
            return _Features(state.out_nodes, const)
        if len(ins) == 0 or any(f is None for f in ins) or n_out is None:
            return None
        if kind in _PRODUCERS:
            if len(ins) != 1:
                return None
            feats = ins[0]
            if state.inputs:
                self.nodes.union(state.inputs[0].nodes, feats.nodes)
            state.inputs.append(feats)
            weights = _Weights(layer)
            const = weights.output_const(feats.const)
            state.empty = weights.empty_units()
            state.out_nodes = _once(state.out_nodes, self.nodes, len(const))
            if kind == "depthwise":
                m = layer.depth_multiplier
                self.nodes.union(np.repeat(feats.nodes, m), state.out_nodes)
            return _Features(state.out_nodes, const)
        if kind in ("batchnorm", "featurewise"):
            if len(ins) != 1 or n_out != len(ins[0].nodes):
                return None
            if kind == "batchnorm":
                if layer.axis not in (-1, len(out.shape) - 1):
                    return None
                if state.inputs:
                    self.nodes.union(state.inputs[0].nodes, ins[0].nodes)
                state.inputs.append(ins[0])
            t = call.inputs[0]
            return _Features(ins[0].nodes, _evaluate(layer, [t], ins))
        if kind == "flatten":
            t = self.graph.resolve(call.inputs[0])
            spatial = t.shape[1:-1]
            if len(ins) != 1 or any(d is None for d in spatial):
                return None
            size = int(np.prod(spatial)) if spatial else 1
            if n_out != size * len(ins[0].nodes):
                return None
            return _Features(np.tile(ins[0].nodes, size), np.tile(ins[0].const, size))
        if kind == "merge":
            n = len(ins[0].nodes)
            if len(ins) < 2 or any(len(f.nodes) != n for f in ins) or n_out != n:
                return None
            for f in ins[1:]:
                self.nodes.union(ins[0].nodes, f.nodes)
            return _Features(ins[0].nodes, _evaluate(layer, call.inputs, ins, merge=True))
        if kind == "concat":
            rank = len(out.shape)
            if layer.axis not in (-1, rank - 1):
                return None
            nodes = np.concatenate([f.nodes for f in ins])
            if n_out != len(nodes):
                return None
            return _Features(nodes, np.concatenate([f.const for f in ins]))
        return None

    def _agree(self, layer, state):
        """Input constants of a layer with input-indexed weights, agreed by all calls."""
        if state.kind not in _PRODUCERS or not state.inputs:
            return
        const = state.inputs[0].const.copy()
        for feats in state.inputs[1:]:
            differ = ~((const == feats.const) | (np.isnan(const) & np.isnan(feats.const)))
            self.nodes.veto(
                feats.nodes[differ & ~np.isnan(feats.const)],
                f"'{layer.name}' is shared and its calls see different constants",
            )
            const[differ] = np.nan
        state.const = const
        if state.kind in ("depthwise", "separable") and not _foldable(layer):
            self.nodes.veto(
                state.inputs[0].nodes[~np.isnan(const) & (const != 0)],
                f"read with padding '{layer.padding}' by '{layer.name}' "
                f"({type(layer).__name__}), where a nonzero constant channel is "
                "not a bias",
            )

    def _keep_one_per_tensor(self):
        seen = set()
        for feats in self.info.values():
            if feats is None or id(feats) in seen:
                continue
            seen.add(id(feats))
            if len(feats.nodes) and self.nodes.removed(feats.nodes).all():
                self.nodes.veto_root(feats.nodes[0], "every unit of a tensor was dead; one stays")

    def _choose_rep(self, layer, state):
        if state.kind not in ("conv", "conv_t") or _foldable(layer) or state.const is None:
            return
        nodes, const = state.inputs[0].nodes, state.const
        removed = self.nodes.removed(nodes)
        need = removed & (const != 0)
        if not need.any():
            return
        kept = ~removed & ~np.isnan(const) & (const != 0)
        pool = kept if kept.any() else need
        rep = int(np.argmax(np.where(pool, np.abs(np.nan_to_num(const)), -1.0)))
        if not kept.any():
            self.nodes.veto_root(nodes[rep], "representative")
        state.rep = rep

    # -- what the rebuild and the report read --------------------------- #
    def kept_in(self, layer):
        state = self.states[id(layer)]
        return ~self.nodes.removed(state.inputs[0].nodes)

    def kept_out(self, layer):
        return ~self.nodes.removed(self.states[id(layer)].out_nodes)

    def kept_dead_units(self):
        """`(layer name, count, is_barrier, reason)` for dead units that stay."""
        out = []
        for lid, state in self.states.items():
            if state.out_nodes is None or state.kind == "barrier":
                continue
            dead = np.ones(len(state.out_nodes), bool)
            for feats in state.outputs:
                dead &= ~np.isnan(feats.const)
            kept = dead & ~self.nodes.removed(state.out_nodes)
            reasons = {}
            for node in state.out_nodes[kept].tolist():
                root = self.nodes.find(node)
                reason = self.nodes.veto_roots.get(root)
                if reason is None:
                    reason = (
                        "joined, by a merge, a depthwise channel or a shared "
                        "layer, to units that are not constant",
                        False,
                    )
                if reason[0] in ("a model output", "representative"):
                    continue
                reasons[reason] = reasons.get(reason, 0) + 1
            layer = self.layers[lid]
            if state.empty is not None:
                mixed = state.empty & ~dead
                if mixed.any():  # only a unit-mixing activation makes an empty unit vary
                    name = _activation_name(layer)
                    reason = (f"its activation `{name}` mixes units", True)
                    reasons[reason] = reasons.get(reason, 0) + int(mixed.sum())
            for (reason, barrier), count in reasons.items():
                out.append((layer.name, count, barrier, reason))
        return out


def _once(nodes, registry, n):
    return registry.new(n) if nodes is None else nodes


def _kind(layer):
    cls = type(layer)
    fmt = getattr(layer, "data_format", "channels_last")
    if fmt not in (None, "channels_last"):
        return "barrier"
    if cls is L.Dense:
        return "dense"
    if cls in _CONV:
        return "conv" if layer.groups == 1 else "barrier"
    if cls in _CONV_T:
        return "conv_t"
    if cls in _DEPTHWISE:
        return "depthwise"
    if cls in _SEPARABLE:
        return "separable"
    if cls is L.Embedding:
        return "embedding"
    if cls is L.BatchNormalization:
        return "batchnorm"  # its axis is checked against the tensor's rank
    if cls in _FEATUREWISE:
        if cls is L.Activation and layer.activation not in _ELEMENTWISE:
            return "barrier"
        return "featurewise"
    if cls is L.Flatten:
        return "flatten"
    if cls in _MERGES:
        return "merge"
    if cls is L.Concatenate:
        return "concat"
    return "barrier"


def _np(variable):
    return np.asarray(ops.convert_to_numpy(variable), np.float64)


def _foldable(layer):
    """Whether a constant input channel adds a constant (bias) to every output position."""
    if isinstance(layer, L.Dense):
        return True
    if isinstance(layer, _CONV_T):
        return False
    return layer.padding == "valid" or all(k == 1 for k in layer.kernel_size)


def _activation_name(layer):
    fn = getattr(layer, "activation", None)
    try:
        name = keras.activations.serialize(fn)
    except Exception:  # a custom callable that Keras cannot serialize
        name = None
    return name if isinstance(name, str) else getattr(fn, "__name__", repr(fn))


def _activate(layer, pre):
    """`layer.activation(pre)` for a vector of pre-activations; NaN if it mixes units."""
    fn = getattr(layer, "activation", None) or keras.activations.linear
    if fn not in _ELEMENTWISE:
        return np.full(len(pre), np.nan)
    ok = ~np.isnan(pre)
    out = np.full(len(pre), np.nan)
    if ok.any():
        value = fn(ops.convert_to_tensor(pre[ok][None].astype("float32")))
        out[ok] = np.asarray(ops.convert_to_numpy(value), np.float64)[0]
    return out


def _evaluate(layer, tensors, feats, merge=False):
    """Output constants of a feature-wise layer (or merge) for constant inputs."""
    arrays = []
    for t, f in zip(tensors, feats):
        shape = (1,) + tuple(_EVAL_SIZE if d is None else d for d in t.shape[1:])
        values = np.nan_to_num(f.const).astype("float32")
        arrays.append(np.broadcast_to(values, shape).copy())
    unknown = np.zeros(len(feats[0].const), bool)
    for f in feats:
        unknown |= np.isnan(f.const)
    try:
        out = layer(arrays if merge else arrays[0], training=False)
    except Exception:  # the layer refuses this probe shape: nothing is constant
        return np.full(len(unknown), np.nan)
    out = np.asarray(ops.convert_to_numpy(out), np.float64)
    out = out.reshape(-1, out.shape[-1])
    first = out[0]
    flat = np.all(np.abs(out - first) <= 1e-6 * (1 + np.abs(first)), axis=0)
    return np.where(unknown | ~flat, np.nan, first)


class _Weights:
    """The kernel of a layer seen as `(taps, fan_in, units)`, and its bias."""

    def __init__(self, layer):
        self.layer = layer
        cls = type(layer)
        self.kind = _kind(layer)
        self.bias = _np(layer.bias) if getattr(layer, "bias", None) is not None else None
        if self.kind == "separable":
            dw = _np(layer.depthwise_kernel)  # (*k, in, m)
            pw = _np(layer.pointwise_kernel)  # (1.., in*m, out)
            c_in, m = dw.shape[-2:]
            pw = pw.reshape(c_in, m, pw.shape[-1])
            self.dw, self.pw = dw, pw
            dw_sum = dw.reshape(-1, c_in, m).sum(0)
            dw_any = np.any(dw.reshape(-1, c_in, m) != 0, axis=0)
            self.tap_sum = np.einsum("cj,cjo->co", dw_sum, pw)
            self.reads = np.any(dw_any[:, :, None] & (pw != 0), axis=1)
        elif self.kind == "depthwise":
            k = _np(layer.kernel)  # (*k, in, m)
            c_in, m = k.shape[-2:]
            self.kernel = k
            self.tap_sum = k.reshape(-1, c_in, m).sum(0)
            self.reads = np.any(k.reshape(-1, c_in, m) != 0, axis=0)
        else:
            k = _np(layer.kernel)
            if cls in _CONV_T:
                k = np.swapaxes(k, -1, -2)  # (*k, out, in) -> (*k, in, out)
            if k.ndim == 2:
                k = k[None]
            self.kernel = k  # (*taps, in, out)
            flat = k.reshape(-1, k.shape[-2], k.shape[-1])
            self.tap_sum = flat.sum(0)
            self.reads = np.any(flat != 0, axis=0)

    def empty_units(self):
        """Units that read nothing: their kernel column (filter) is all zeros."""
        if self.kind == "depthwise":
            return ~self.reads.reshape(-1)
        return ~self.reads.any(0)

    def output_const(self, const):
        """Each output unit's constant value, NaN where it is not constant."""
        layer = self.layer
        foldable = _foldable(layer)
        if self.kind == "depthwise":
            c_in, m = self.tap_sum.shape
            c = np.repeat(const, m).reshape(c_in, m)
            pre = np.where(self.reads, c * self.tap_sum, 0.0)
            if not foldable:
                pre = np.where(self.reads & (c != 0), np.nan, pre)
            pre = pre.reshape(-1)
        else:
            reads = self.reads  # (in, out)
            c = const[:, None]
            bad = reads & np.isnan(c)
            if not foldable:
                bad |= reads & (c != 0)
            pre = np.where(reads, np.nan_to_num(c) * self.tap_sum, 0.0).sum(0)
            pre = np.where(bad.any(0), np.nan, pre)
        if self.bias is not None:
            pre = pre + self.bias
        return _activate(layer, pre)


# ---------------------------------------------------------------------- #
# 3. The rebuild
# ---------------------------------------------------------------------- #
def _rebuild(graph, plan, model):
    names, built = set(), {}
    weights = {}

    def make(layer):
        if id(layer) in built:
            return built[id(layer)]
        config, values = _narrow(layer, plan)
        name = config["name"]
        suffix = 1
        while config["name"] in names:
            config["name"] = f"{name}_{suffix}"
            suffix += 1
        names.add(config["name"])
        new = type(layer).from_config(config)
        built[id(layer)] = new
        weights[id(new)] = (new, values)
        return new

    if _is_chain(graph):
        first = keras.tree.flatten(graph.inputs)[0]
        layers = [make(call.layer) for call in graph.calls]
        new_model = keras.Sequential(
            [keras.Input(batch_shape=first.shape, dtype=first.dtype)] + layers,
            name=f"{model.name}_compact",
        )
    else:
        tensors = {}
        inputs = keras.tree.map_structure(
            lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name),
            graph.inputs,
        )
        for old, new in zip(keras.tree.flatten(graph.inputs), keras.tree.flatten(inputs)):
            tensors[id(old)] = new

        def lookup(x):
            return tensors[id(graph.resolve(x))] if _is_tensor(x) else x

        for call in graph.calls:
            layer = make(call.layer)
            args = keras.tree.map_structure(lookup, call.args)
            kwargs = keras.tree.map_structure(lookup, call.kwargs)
            outputs = layer(*args, **kwargs)
            for old, new in zip(keras.tree.flatten(call.outputs), keras.tree.flatten(outputs)):
                tensors[id(old)] = new
        outputs = keras.tree.map_structure(lookup, graph.outputs)
        new_model = keras.Model(inputs, outputs, name=f"{model.name}_compact")
    for new, values in weights.values():
        if values is not None:
            new.set_weights(
                [
                    np.asarray(v, keras.backend.standardize_dtype(w.dtype))
                    for v, w in zip(values, new.weights)
                ]
            )
    return new_model


def _is_chain(graph):
    inputs = keras.tree.flatten(graph.inputs)
    if len(inputs) != 1 or len(keras.tree.flatten(graph.outputs)) != 1:
        return False
    current, seen = inputs[0], set()
    for call in graph.calls:
        ins, outs = call.inputs, call.output_list
        if id(call.layer) in seen or len(ins) != 1 or len(outs) != 1:
            return False
        # a Sequential calls its layers with no arguments beyond the input
        # (training=True, for one, would be lost)
        if graph.resolve(ins[0]) is not current or any(
            v is not None and not (k == "training" and v is False) for k, v in call.kwargs.items()
        ):
            return False
        seen.add(id(call.layer))
        current = outs[0]
    return current is keras.tree.flatten(graph.outputs)[0]


def _narrow(layer, plan):
    """The config and weights of `layer` without its removed units."""
    config = plain_config(layer)
    state = plan.states[id(layer)]
    kind = state.kind
    if kind == "batchnorm":
        keep = plan.kept_in(layer)
        return config, [w[keep] for w in map(_np, layer.weights)]
    if kind == "embedding" and state.out_nodes is not None:
        keep = plan.kept_out(layer)
        config["output_dim"] = int(keep.sum())
        return config, [_np(layer.embeddings)[:, keep]]
    if kind not in _PRODUCERS or not state.inputs:
        return config, layer.get_weights()
    w = _Weights(layer)
    kin, kout = plan.kept_in(layer), plan.kept_out(layer)
    const = np.where(kin, 0.0, np.nan_to_num(state.const))  # constants of removed inputs
    if kind == "depthwise":
        c_in, m = w.tap_sum.shape
        kernel = w.kernel[..., kin, :]
        values = [kernel]
        if w.bias is not None:
            values.append(w.bias.reshape(c_in, m)[kin].reshape(-1))
        return config, values
    bias = w.bias if w.bias is not None else np.zeros(len(kout))
    if kind == "separable":
        folded = bias + const @ w.tap_sum if _foldable(layer) else bias
        dw = w.dw[..., kin, :]
        pw = w.pw[kin][:, :, kout]
        pw = pw.reshape(tuple(layer.pointwise_kernel.shape[:-2]) + (-1, int(kout.sum())))
        config["filters"] = int(kout.sum())
        values = [dw, pw]
        if w.bias is not None or np.any(folded[kout] != 0):
            config["use_bias"] = True
            values.append(folded[kout])
        return config, values
    kernel = w.kernel.copy()  # (*taps, in, out)
    if _foldable(layer):
        folded = bias + const @ w.tap_sum
    else:
        folded = bias.copy()
        if state.rep is not None:
            rep = state.rep
            scale = np.where(~kin, const, 0.0) / state.const[rep]
            kernel[..., rep, :] += np.tensordot(kernel, scale, axes=([-2], [0]))
    kernel = kernel[..., kin, :][..., kout]
    if kind == "dense":
        kernel = kernel[0]
        config["units"] = int(kout.sum())
    else:
        config["filters"] = int(kout.sum())
        kernel = kernel.reshape(tuple(layer.kernel.shape[:-2]) + kernel.shape[-2:])
        if kind == "conv_t":
            kernel = np.swapaxes(kernel, -1, -2)
    values = [kernel]
    if w.bias is not None or np.any(folded[kout] != 0):
        config["use_bias"] = True
        values.append(folded[kout])
    return config, values
