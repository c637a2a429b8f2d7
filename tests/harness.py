"""The shared test harness: build, run, serialise, save, train a step, other backends.

Every model family's tests call these, so that each family meets the same bar.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np

from segzoo.layers.normalization import IMAGENET_MEAN, IMAGENET_STD

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.join(REPO_ROOT, "tests")


#: The fewest presets, favouring small ones, that together use every layer class (with its activation)
#: of any preset; the others arrange the same layers with other widths, block counts or stages
#: (ddrnet23 and ddrnet39 ~ ddrnet23_slim, pidnet_m ~ pidnet_s, efficientnetv2s ~ efficientnetb0_lite
#: and mobilenetv3large; ddrnet39's stages are checked against the authors' code in test_weights).
#: The slow per-preset checks (other backends, export) run on these; test_presets checks the cover.
STRUCTURAL_PRESETS = ("ddrnet23_slim", "deeplabv3plus_efficientnetb0_lite", "deeplabv3plus_mobilenetv3large",
                      "pidnet_s", "pidnet_l")


def random_images(batch=1, height=64, width=64, seed=0):
    """Float32 RGB images with values 0..255, shape (batch, height, width, 3)."""
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")


def official_input(images):
    """A torch ``(B, 3, H, W)`` float32 tensor of 0..255 NHWC ``images``, normalised as the official code does."""
    import torch

    mean, std = np.asarray(IMAGENET_MEAN, "float32"), np.asarray(IMAGENET_STD, "float32")
    return torch.from_numpy(((images / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype("float32"))


def run_official(model, images):
    """An official (PyTorch) model's outputs ``{name: NHWC numpy}`` for 0..255 NHWC ``images``.

    The model returns a dict of NCHW maps with ``"logits"``; ``"upsampled"`` is
    added: the logits resized bilinearly to the input size (half-pixel centres).
    """
    import torch

    with torch.no_grad():
        outputs = model(official_input(images))
        outputs["upsampled"] = torch.nn.functional.interpolate(outputs["logits"], size=images.shape[1:3],
                                                               mode="bilinear", align_corners=False)
    return {key: value.numpy().transpose(0, 2, 3, 1) for key, value in outputs.items()}


def random_labels(batch=1, height=64, width=64, num_classes=2, seed=0):
    """Int32 class ids in [0, max(num_classes, 2)), shape (batch, height, width)."""
    return np.random.default_rng(seed).integers(0, max(num_classes, 2), (batch, height, width)).astype("int32")


def assert_config_roundtrip(obj):
    """``from_config(get_config())`` gives an object with the same config."""
    config = obj.get_config()
    clone = type(obj).from_config(config)
    assert clone.get_config() == config
    return clone


def assert_keras_file_roundtrip(model, inputs, directory, atol=1e-6):
    """Save ``model`` as ``.keras``, load it in safe mode, and compare outputs on ``inputs``."""
    path = os.path.join(directory, "model.keras")
    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    actual = keras.ops.convert_to_numpy(loaded(inputs, training=False))
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=0)
    return loaded


def assert_trains_one_step(model, images, labels, loss=None):
    """One optimiser step changes the weights and gives a finite loss."""
    if loss is None:
        loss = (keras.losses.BinaryCrossentropy(from_logits=True) if model.num_classes == 1
                else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    labels = labels[..., None].astype("float32") if model.num_classes == 1 else labels
    value = model.train_on_batch(images, labels)
    assert np.isfinite(value), value
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    return value


def run_in_backend(backend, code, timeout=900):
    """Run ``code`` in a fresh Python with ``KERAS_BACKEND=backend``; return the JSON it prints last.

    ``code`` must print one JSON document on its last line of output.
    """
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([REPO_ROOT, TESTS_DIR,
                                           os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{backend} run failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@keras.saving.register_keras_serializable(package="segzoo_tests")
class TinyBackbone(__import__("segzoo.backbones.base", fromlist=["Backbone"]).Backbone):
    """A three-level backbone for tests of the model machinery (P1..P3, strides 2..8)."""

    size_divisor = 8

    def __init__(self, input_shape=(None, None, 3), **kwargs):
        from segzoo.layers import ConvBNAct

        inputs = keras.Input(input_shape)
        p1 = ConvBNAct(4, strides=2, name="p1")(inputs)
        p2 = ConvBNAct(8, strides=2, name="p2")(p1)
        p3 = ConvBNAct(8, strides=2, name="p3")(p2)
        super().__init__(inputs, {"P1": p1, "P2": p2, "P3": p3}, {"P1": 2, "P2": 4, "P3": 8}, **kwargs)
        self.image_shape = tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "input_shape": self.image_shape}


@keras.saving.register_keras_serializable(package="segzoo_tests")
class TinyHead(keras.layers.Layer):
    """A 1x1 classifier on one feature level, for tests of the model machinery."""

    def __init__(self, num_classes, level="P3", **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.level = num_classes, level
        self.classifier = keras.layers.Conv2D(num_classes, 1, name="classifier")

    def build(self, input_shape):
        self.classifier.build(input_shape[self.level])
        self.built = True

    def call(self, features, training=None):
        return self.classifier(features[self.level])

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "level": self.level}


def tiny_preset(name="tiny"):
    """A preset ``name`` of TinyBackbone + TinyHead (and a P2 auxiliary head), for tests of the training machinery.

    Checkpointing, resuming, recipes and distribution do not depend on the model, and tracing a real
    preset's first step takes most of a minute on 2 cores, again in every process such a test starts."""
    from segzoo import presets
    from segzoo.models import SegmentationModel

    def build(num_classes, input_shape, weights, aux_loss_weight):
        return SegmentationModel(TinyBackbone(input_shape), TinyHead(num_classes),
                                 aux_head=TinyHead(num_classes, level="P2"), aux_loss_weight=aux_loss_weight)

    return presets.Preset(name, "Tiny", "a test model", build, 0, 0.0, "tests/harness.py")


def register_tiny_preset(name="tiny"):
    """Register :func:`tiny_preset` for the rest of this process (a child process of a test)."""
    from segzoo import presets

    if name not in presets.list_presets():
        presets.register_preset(tiny_preset(name))


#: ``python -c TINY_CLI <segzoo arguments>``: the ``segzoo`` command with the ``tiny`` preset registered
#: (the child process needs ``TESTS_DIR`` on its ``PYTHONPATH``).
TINY_CLI = """
import sys
import harness
from segzoo import cli

harness.register_tiny_preset()
sys.exit(cli.main(sys.argv[1:]))
"""


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
_CHECK_PAGE = """<!doctype html><html><body><pre id=result>pending</pre>
<iframe id=page src="{page}" width=1200 height=800></iframe>
<script>
document.getElementById('page').onload = function () {{
  var doc = this.contentDocument, images = Array.from(doc.images), videos = Array.from(doc.querySelectorAll('video'));
  var broken = images.filter(function (i) {{ return !(i.complete && i.naturalWidth > 0); }})
                     .map(function (i) {{ return i.getAttribute('src'); }});
  document.getElementById('result').textContent = JSON.stringify(
      {{images: images.length, videos: videos.length, broken: broken, title: doc.title}});
}};
</script></body></html>"""


def page_images_in_browser(folder, page="report.html"):
    """Open ``folder/page`` in headless Chromium (served on 127.0.0.1) and report what loaded.

    Returns ``{"images": n, "videos": n, "broken": [src of every image that did not load], "title": ...}``.
    """
    import functools
    import http.server
    import threading

    check = os.path.join(folder, "_check_page.html")
    with open(check, "w", encoding="utf-8") as f:
        f.write(_CHECK_PAGE.format(page=page))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=folder)
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={os.path.join(folder, '_chromium_profile')}", "--virtual-time-budget=15000",
             "--dump-dom", f"http://127.0.0.1:{server.server_address[1]}/_check_page.html"],
            capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    dom = result.stdout
    start = dom.index('<pre id="result">') + len('<pre id="result">')
    import html

    return json.loads(html.unescape(dom[start:dom.index("</pre>", start)]))
