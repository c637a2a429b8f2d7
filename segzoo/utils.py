"""Small helpers that belong to no single module: counting multiply-adds."""

import keras

# The symbolic tracer of the active backend (a TF FuncGraph, jax.eval_shape or
# torch meta tensors). Keras has no public name for it; Layer.compute_output_spec
# uses it the same way.
from segzoo import keras_internals

_COUNTED_LAYERS = (
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose, keras.layers.Dense,
)


def _layer_macs(layer, input_shape, output_shape):
    """Multiply-adds of one call of a counted layer, per batch item."""
    def prod(values):
        result = 1
        for v in values:
            result *= int(v)
        return result

    out_positions = prod(output_shape[1:-1])
    in_channels, out_channels = int(input_shape[-1]), int(output_shape[-1])
    if isinstance(layer, keras.layers.Dense):
        return out_positions * in_channels * out_channels
    kernel = prod(layer.kernel_size)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return out_positions * out_channels * kernel
    if isinstance(layer, keras.layers.SeparableConv2D):
        depthwise_channels = in_channels * layer.depth_multiplier
        return out_positions * depthwise_channels * (kernel + out_channels)
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return prod(input_shape[1:-1]) * in_channels * kernel * out_channels
    return out_positions * out_channels * kernel * in_channels // layer.groups


def count_flops(model, input_shape=None) -> int:
    """Count the multiply-adds (MACs) of one forward pass of ``model`` for one image.

    Convention: one multiply-add of a convolution or dense layer counts 1, the
    convention of the DDRNet paper and most segmentation papers, whose "GFLOPs"
    are these multiply-adds (twice as many floating-point operations).
    Normalisation, activations, pooling, resizes and element-wise additions are
    not counted: together they are well under 1% of the total for the models
    here. The count is analytical: the model runs symbolically (no arithmetic)
    and every convolution and dense layer reports its shapes.

    Args:
        model: a built Keras model (or layer) taking one image batch.
        input_shape: ``(H, W, C)``; defaults to the model's own input shape,
            which must then be fully known.

    Returns:
        The number of multiply-adds, an int.
    """
    if input_shape is None:
        known = getattr(model, "input_shape", None) or model.backbone.input_shape
        input_shape = tuple(known[1:])
    if any(d is None for d in input_shape):
        raise ValueError(
            f"count_flops needs a fully known input shape; got {tuple(input_shape)}. "
            f"Pass input_shape=(H, W, 3)."
        )
    total = 0

    def instrument(layer):
        original = layer.call

        def counted(inputs, *args, **kwargs):
            nonlocal total
            outputs = original(inputs, *args, **kwargs)
            total += _layer_macs(layer, inputs.shape, outputs.shape)
            return outputs

        keras_internals.shadow_call(layer, counted)

    layers = [layer for layer in keras_internals.sublayers(model) if isinstance(layer, _COUNTED_LAYERS)]
    try:
        for layer in layers:
            instrument(layer)
        # Tracing model.call with backend tensors (not KerasTensors) makes every
        # nested layer, in functional graphs and subclassed layers alike, run
        # its call() on tensors of known shape.
        keras_internals.trace_symbolically(model.call, keras.KerasTensor((1, *input_shape)))
    finally:
        for layer in layers:
            keras_internals.restore_call(layer)
    return total


def count_params(model) -> int:
    """Number of weights used at inference: all of ``model`` except its training-only heads."""
    heads = getattr(model, "training_heads", None)
    if heads is not None:
        training_only = sum(head.layer.count_params() for head in heads.values())
    else:
        aux_head = getattr(model, "aux_head", None)
        training_only = aux_head.count_params() if aux_head is not None else 0
    return model.count_params() - training_only
