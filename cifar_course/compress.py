"""Making a trained network smaller and faster: cost counts, quantization
(post-training and quantization-aware), magnitude pruning, and TFLite conversion, evaluation and timing.

Introduced in the lightweighting chapter (09). tensorflow_model_optimization (tfmot) is imported inside the
functions that need it, so `import cifar_course` stays fast.

A TFLite model here always takes float32 images standardized like the Keras model's input and returns
float32 probabilities, even when its insides are int8: the interpreter quantizes at the edges, so every
variant is evaluated, timed and served by the same code.
"""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow import keras
from tensorflow.keras import layers

from .runtime import TFLiteModel, quiet_native, quiet_tf_logger

TFLITE_MODES = ("float32", "dynamic", "int8")


# ------------------------------------------------------------------------------------------------
# Cost: parameters and multiply-accumulates


def _unwrap(layer):
    """The layer inside tfmot's pruning/quantization wrappers."""
    while hasattr(layer, "layer") and isinstance(getattr(layer, "layer"), layers.Layer):
        layer = layer.layer
    return layer


def _spatial(shape) -> int:
    return int(np.prod([d for d in shape[1:-1]])) if len(shape) > 2 else 1


def layer_macs(layer, input_shape, output_shape) -> int:
    """Multiply-accumulates for one image through a Conv2D, DepthwiseConv2D, SeparableConv2D or Dense
    layer, from its shapes (0 for other layers: they are cheap next to these)."""
    layer = _unwrap(layer)
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        c_in = input_shape[-1]
        depthwise = _spatial(output_shape) * kh * kw * c_in * layer.depth_multiplier
        pointwise = _spatial(output_shape) * c_in * layer.depth_multiplier * layer.filters
        return int(depthwise + pointwise)
    if isinstance(layer, layers.DepthwiseConv2D):  # a Conv2D subclass: test it first
        kh, kw = layer.kernel_size
        return int(_spatial(output_shape) * kh * kw * input_shape[-1] * layer.depth_multiplier)
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        return int(_spatial(output_shape) * kh * kw * input_shape[-1] // layer.groups * layer.filters)
    if isinstance(layer, layers.Dense):
        return int(_spatial(output_shape) * input_shape[-1] * layer.units)
    return 0


def count_cost(model) -> dict:
    """Parameters and multiply-accumulates (MACs, per image) of a Keras model.

    Returns {"params", "trainable_params", "macs", "layers": [(name, type, params, macs), ...]}.
    Nested models are walked into. One MAC is one multiply and one add; FLOPs are about 2 x MACs.
    """
    rows = []

    def walk(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                walk(layer)
                continue
            macs = 0
            if not isinstance(layer, layers.InputLayer):
                in_shape, out_shape = layer.input_shape, layer.output_shape
                # Merge layers (Add, Concatenate) take a list of shapes and do no multiply-accumulates.
                if not isinstance(in_shape, list) and not isinstance(out_shape, list):
                    macs = layer_macs(layer, in_shape, out_shape)
            rows.append((layer.name, type(_unwrap(layer)).__name__, int(layer.count_params()), macs))

    walk(model)
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return {"params": int(model.count_params()), "trainable_params": trainable,
            "macs": int(sum(r[3] for r in rows)), "layers": rows}


# ------------------------------------------------------------------------------------------------
# Quantization-aware training (tfmot)


def build_qat_model(model, passthrough=()):
    """Wrap a trained float model for quantization-aware training: fake-quantize weights and activations
    to 8 bits in the forward pass, so fine-tuning learns weights that survive int8.

    Layers tfmot knows (Conv2D + BatchNorm + ReLU, Dense, pooling, ...) get its default 8-bit configs.
    Layer classes in `passthrough` (e.g. a custom layer, or Rescaling) are annotated with a
    QuantizeConfig that quantizes nothing, so the model still converts; the rest goes through
    `quantize_annotate_layer` + `quantize_apply`, which is what `quantize_model` does for a plain model.
    """
    import tensorflow_model_optimization as tfmot

    q = tfmot.quantization.keras
    if not passthrough:
        return q.quantize_model(model)
    no_quantize = no_quantize_config()

    def annotate(layer):
        # The same layer object goes into the clone, so the trained weights come along.
        if isinstance(layer, tuple(passthrough)):
            return q.quantize_annotate_layer(layer, quantize_config=no_quantize)
        return q.quantize_annotate_layer(layer)

    annotated = keras.models.clone_model(model, clone_function=annotate)
    with q.quantize_scope({"NoQuantizeConfig": type(no_quantize)}):
        return q.quantize_apply(annotated)


_NO_QUANTIZE_CLASS = None


def no_quantize_config():
    """A tfmot QuantizeConfig that leaves a layer in float (nothing of it is quantized).

    The class is made on first use so that importing this module does not import tfmot.
    """
    global _NO_QUANTIZE_CLASS
    if _NO_QUANTIZE_CLASS is None:
        import tensorflow_model_optimization as tfmot

        class NoQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
            def get_weights_and_quantizers(self, layer):
                return []

            def get_activations_and_quantizers(self, layer):
                return []

            def set_quantize_weights(self, layer, quantize_weights):
                pass

            def set_quantize_activations(self, layer, quantize_activations):
                pass

            def get_output_quantizers(self, layer):
                return []

            def get_config(self):
                return {}

        _NO_QUANTIZE_CLASS = NoQuantizeConfig
    return _NO_QUANTIZE_CLASS()


# ------------------------------------------------------------------------------------------------
# Magnitude pruning (tfmot)


def pruning_steps(epochs: int, steps_per_epoch: int, start: float = 0.0, end: float = 0.7) -> tuple:
    """(begin_step, end_step) of the sparsity ramp from the fine-tuning length: the ramp starts at
    fraction `start` of the run and ends at `end`, leaving the rest to recover at final sparsity."""
    total = int(epochs) * int(steps_per_epoch)
    if total < 2:
        raise ValueError(f"Pruning needs at least 2 optimizer steps, got {epochs} x {steps_per_epoch}.")
    if not 0 <= start < end <= 1:
        raise ValueError(f"Need 0 <= start < end <= 1, got start={start}, end={end}.")
    begin, finish = int(start * total), max(int(end * total), int(start * total) + 1)
    return begin, min(finish, total)


def build_pruned_model(model, begin_step: int, end_step: int, initial_sparsity: float = 0.3,
                       final_sparsity: float = 0.7, frequency: int = 100):
    """Wrap a trained model for magnitude pruning: every `frequency` steps between begin_step and
    end_step the smallest weights of each Conv/Dense kernel are zeroed, the zeroed fraction following a
    cubic PolynomialDecay from initial to final sparsity (a common tfmot schedule: 0.3 -> 0.7).

    Fit it with `pruning_callbacks()`; export with `strip_pruning`.
    """
    import tensorflow_model_optimization as tfmot

    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=initial_sparsity, final_sparsity=final_sparsity, begin_step=int(begin_step),
        end_step=int(end_step), frequency=max(1, min(int(frequency), int(end_step) - int(begin_step))))
    return tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)


def pruning_callbacks(log_dir=None) -> list:
    """UpdatePruningStep advances the pruning schedule (fitting without it raises an error)."""
    import tensorflow_model_optimization as tfmot

    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    if log_dir:
        callbacks.append(tfmot.sparsity.keras.PruningSummaries(log_dir=str(log_dir)))
    return callbacks


def strip_pruning(model):
    """Remove the pruning wrappers (and their masks) for export: plain layers with zeros in them."""
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.strip_pruning(model)


def sparsity(model) -> dict:
    """Fraction of exactly-zero weights in each Conv/Dense kernel (wrapped or stripped), plus 'overall'."""
    zeros = total = 0
    out = {}
    for layer in _all_layers(model):
        inner = _unwrap(layer)
        if not isinstance(inner, (layers.Conv2D, layers.Dense, layers.SeparableConv2D)):
            continue
        kernels = [w for w in layer.weights if "kernel" in w.name and "mask" not in w.name]
        for w in kernels:
            values = np.asarray(w.numpy())
            out[f"{inner.name}/{w.name.split('/')[-1].split(':')[0]}"] = float((values == 0).mean())
            zeros += int((values == 0).sum())
            total += values.size
    out["overall"] = zeros / total if total else 0.0
    return out


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


# ------------------------------------------------------------------------------------------------
# TFLite: convert, evaluate, time, size (running a .tflite file is runtime.TFLiteModel's job)


def representative_dataset(x, count: int = 200, batch_size: int = 1):
    """A generator function over `count` float32 images for full-int8 calibration."""
    x = np.asarray(x, np.float32)[:count]

    def gen():
        for start in range(0, len(x), batch_size):
            yield [x[start:start + batch_size]]

    return gen


def to_tflite(model, mode: str = "float32", representative_data=None, path=None,
              sparse: bool = False) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer (returned as bytes, also written to `path`).

    mode: "float32" (no quantization); "dynamic" (weights stored as int8, no data needed; TFLite's hybrid
    kernels quantize each layer's float input on the fly and return float); "int8" (weights and activations int8, ranges calibrated on `representative_data`, a few
    hundred standardized training images or a generator from `representative_dataset`). A model made by
    `build_qat_model` carries its own ranges: use mode="int8" with no data.
    Inputs and outputs stay float32 so every variant is called the same way.
    sparse=True stores mostly-zero weight tensors (a pruned model's) in TFLite's sparse format, so the
    file shrinks without a compressor; the interpreter expands them when it loads the model.
    """
    if mode not in TFLITE_MODES:
        raise ValueError(f"Unknown TFLite mode {mode!r}; choose one of {', '.join(TFLITE_MODES)}.")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode in ("dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if sparse:
        converter.optimizations = [*converter.optimizations, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if mode == "int8":
        is_qat = any("quantize" in type(layer).__name__.lower() for layer in model.layers)
        if representative_data is None and not is_qat:
            raise ValueError("Full int8 needs representative_data (a few hundred standardized images) to "
                             "calibrate activation ranges, unless the model was trained with QAT.")
        if representative_data is not None:
            if not callable(representative_data):
                representative_data = representative_dataset(representative_data)
            converter.representative_dataset = representative_data
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    import warnings

    with quiet_native(), quiet_tf_logger(), warnings.catch_warnings():
        # Inputs stay float32 on purpose, so the converter's note about input statistics does not apply.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        flatbuffer = converter.convert()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(flatbuffer)
    return flatbuffer


def evaluate_tflite(model, x, y, batch_size: int = 256, num_threads: int | None = 1) -> float:
    """Top-1 accuracy of a TFLite model (bytes, path or TFLiteModel) on standardized float images."""
    runner = model if isinstance(model, TFLiteModel) else TFLiteModel(model, num_threads)
    predictions = runner.predict(x, batch_size).argmax(-1)
    return float((predictions == np.asarray(y).reshape(-1)).mean())


def time_tflite(model, x, batch_size: int = 1, repeats: int = 50, warmup: int = 5,
                num_threads: int | None = 1) -> dict:
    """Median wall time of one `invoke` at `batch_size` (after warm-up), as latency (ms per batch) and
    throughput (images per second)."""
    runner = model if isinstance(model, TFLiteModel) else TFLiteModel(model, num_threads)
    batch = np.asarray(x[:batch_size], np.float32)
    if len(batch) < batch_size:
        raise ValueError(f"Need at least {batch_size} images to time batch size {batch_size}.")
    runner._resize(batch_size)
    interp, index = runner.interpreter, runner._input["index"]
    times = []
    for i in range(warmup + repeats):
        interp.set_tensor(index, batch)
        start = time.perf_counter()
        interp.invoke()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {"latency_ms": 1000 * median, "throughput_ips": batch_size / median}


def paired_latency(models: dict, x, batch_size: int = 1, repeats: int = 50, rounds: int = 3,
                   num_threads: int | None = 1) -> dict:
    """Median latency (ms per call at `batch_size`) of each {name: tflite bytes}, timed in turns: every
    round times each model once, so a change in machine load between models hits all of them alike, and
    each round starts one model further on, so no model always runs first. Returns {name: median over
    rounds of each round's median}; for comparisons of a few percent. The same file under two names is
    an A/A control: their ratio is the noise."""
    runners = {name: TFLiteModel(content, num_threads) for name, content in models.items()}
    names = list(runners)
    times = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_tflite(runners[name], x, batch_size, repeats)["latency_ms"])
    return {name: float(np.median(times[name])) for name in names}


def file_sizes(content) -> dict:
    """Size in bytes of a model file (bytes or a path), raw and gzipped (level 9): the gzipped size is
    what pruning shrinks, since runs of zeros compress and a dense float file barely does."""
    if isinstance(content, (str, Path)):
        path = Path(content)
        if path.is_dir():
            content = b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())
        else:
            content = path.read_bytes()
    return {"raw_bytes": len(content), "gzip_bytes": len(gzip.compress(bytes(content), 9))}


def compare_tflite(models: dict, x, y, timing_images=None, baseline: str | None = None,
                   repeats: int = 50, num_threads: int | None = 1,
                   eval_threads: int | None = None) -> list[dict]:
    """The comparison table: one row per {name: tflite bytes} with size raw and gzipped (KB), accuracy
    on (x, y), latency at batch 1 (ms), throughput at batch 32 (images/s), and each as a ratio to the
    `baseline` row (default: the first). All timed in this one process, one after the other, on
    `num_threads`; the accuracy pass uses `eval_threads` (default: every core), which changes only how
    long it takes."""
    timing_images = x if timing_images is None else timing_images
    eval_threads = eval_threads or os.cpu_count() or 1
    rows = []
    for name, content in models.items():
        runner = TFLiteModel(content, num_threads)
        sizes = file_sizes(content)
        rows.append({
            "model": name,
            "size_kb": sizes["raw_bytes"] / 1024,
            "gzip_kb": sizes["gzip_bytes"] / 1024,
            "accuracy": evaluate_tflite(content, x, y, num_threads=eval_threads),
            "latency_b1_ms": time_tflite(runner, timing_images, 1, repeats)["latency_ms"],
            "throughput_b32_ips": time_tflite(runner, timing_images, 32, max(5, repeats // 5))["throughput_ips"],
        })
    base = next((r for r in rows if r["model"] == baseline), rows[0]) if rows else None
    for row in rows:
        row["smaller_x"] = base["size_kb"] / row["size_kb"]
        row["smaller_gzip_x"] = base["gzip_kb"] / row["gzip_kb"]
        row["speedup_b1_x"] = base["latency_b1_ms"] / row["latency_b1_ms"]
        row["accuracy_drop_pts"] = 100 * (base["accuracy"] - row["accuracy"])
    return rows


def keras_tflite_gap(model, tflite, x) -> float:
    """Largest absolute difference between Keras and TFLite probabilities on `x`."""
    runner = tflite if isinstance(tflite, TFLiteModel) else TFLiteModel(tflite)
    return float(np.abs(model.predict(np.asarray(x, np.float32), verbose=0) - runner.predict(x)).max())
