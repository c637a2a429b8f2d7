"""The tf.data input pipeline: batches of ``(image, label)`` for training and evaluation.

``image`` is ``float32`` ``(B, H, W, 3)`` RGB with values 0..255 (models
normalise inside themselves); ``label`` is ``int32`` ``(B, H, W)`` class ids,
``ignore_index`` where a pixel counts for nothing. The source is either

- a path to an ``rgb/`` + ``gt/`` folder, a zip of one, or a folder holding
  one such zip (see :func:`segzoo.data.sources.open_dataset`), read directly,
  in parallel, with the same reader and the same split as the TFDS builder
  (:mod:`segzoo.data.splits`); a CVAT export must be converted first
  (:func:`segzoo.data.import_cvat`, or :func:`segzoo.data.prepare_source`), or
- the name of a dataset built by :func:`segzoo.data.build_dataset` (or
  ``tfds build``), found in ``data_dir``.

Order of operations::

    list -> shuffle [-> repeat] -> [shard] -> read + decode -> check (size, label values)
    -> resize (no augmentation) -> cache -> shuffle -> repeat -> [random scale, crop/pad, flip, colour jitter]
    -> [pad] -> batch -> prefetch

With ``repeat``, the random draws of a folder source without ``cache`` (the
order of each epoch, every augmentation) are functions of ``seed`` and of the
item's position in the endless stream, so that every iterator of the dataset
yields the same stream. (Keras's ``fit`` reads a first batch from an iterator
that it then drops, to build the model; draws from a random generator shared
by all iterators would depend on how far that one had read ahead, and differ
from run to run and from process to process.) Without ``repeat``, each
iteration reshuffles and draws anew.

Multi-process training gives each process its own shard (``num_shards``,
``shard_index``). A folder source deals out the shuffled list (seeded, so the
same list in every process) in blocks of ``batch_size`` items, block ``k`` to
shard ``k mod num_shards``, before decoding, and the augmentation draws
likewise. So the shards' ``k``-th batches, one after the other, are the
``k``-th batch of one process reading everything with ``batch_size x
num_shards``, item for item and draw for draw (exactly, when nothing is
cached and the split's size is a multiple of ``batch_size x num_shards``;
with ``cache`` each shard keeps its items and shuffles them; a TFDS source
reads an even part of the split, ``tfds.even_splits``). ``pad_remainder``
fills each shard up to the same number of full batches with ignored items,
so that no process runs one step more than another.

Errors name the file (folder) or the dataset, split and id (TFDS): a corrupt
image, an image whose size differs from its label, a label value that is
neither a class id below ``num_classes`` nor ``ignore_index``, and images of
different sizes batched without ``image_size``. They surface as
``tf.errors.InvalidArgumentError`` when the batch is read.
"""

from __future__ import annotations

import math
import os

import tensorflow as tf

from segzoo.constants import IGNORE_INDEX
from segzoo.errors import option
from segzoo.data.datasource import open_source
from segzoo.data.io import DataError
from segzoo.data.online_augment import augment_element
from segzoo.data.splits import ALL, TRAIN

AUTOTUNE = tf.data.AUTOTUNE


def _in_shard(index, num_shards, shard_index, block_size):
    """Whether element ``index`` (an int or a tensor) is in shard ``shard_index``: blocks of
    ``block_size`` consecutive elements are dealt to the shards in turn."""
    return (index // block_size) % num_shards == shard_index


def _shard_blocks(dataset, num_shards, shard_index, block_size):
    """Blocks ``shard_index``, ``shard_index + num_shards``, ... of ``block_size`` consecutive elements."""
    if num_shards == 1:
        return dataset
    return (dataset.enumerate()
            .filter(lambda index, _: _in_shard(index, num_shards, shard_index, block_size))
            .map(lambda _, element: element))


def _epoch_orders(count, seed, shuffle):
    """Positions ``0..count - 1``, epoch after epoch without end; epoch ``e`` in the order drawn from ``(seed, e)``."""
    def epoch(index):
        order = tf.range(count, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([tf.constant(seed, tf.int64), index]))
        return tf.data.Dataset.from_tensor_slices(order)

    return tf.data.Dataset.counter().flat_map(epoch)


def _read_folder(reader, ids, shuffle, seed, repeat=False, shard=(1, 0, 1)):
    """Elements ``{"image", "label", "image_file", "label_file"}`` of ``ids``, decoded in parallel.

    ``repeat``: epoch after epoch, each in its own seeded order (see the
    module docstring). ``shard``: ``(num_shards, shard_index, block_size)``;
    only that shard's blocks of the stream are decoded.

    Decoding goes through segzoo's reader (OpenCV) inside ``tf.py_function``
    rather than ``tf.io.decode_image``: it applies EXIF orientation as CVAT
    does (TensorFlow ignores it, which would turn phone photos against their
    labels), reads every format the folder accepts, checks each pair, and its
    errors name the files.
    """
    def read(item_id):
        return reader.load(item_id.numpy().decode("utf-8"))

    def read_element(item_id, image_file, label_file):
        image, label = tf.py_function(read, [item_id], (tf.uint8, tf.uint8))
        image.set_shape([None, None, 3])
        label.set_shape([None, None])
        return {"image": image, "label": label, "image_file": image_file, "label_file": label_file}

    files = (tf.constant(ids), tf.constant([reader.image_path(i) for i in ids]),
             tf.constant([reader.label_path(i) for i in ids]))
    # shuffling names before decoding costs no memory and mixes the whole split
    if repeat:
        dataset = _epoch_orders(len(ids), seed, shuffle).map(lambda i: tuple(tf.gather(f, i) for f in files))
    else:
        dataset = tf.data.Dataset.from_tensor_slices(files)
        if shuffle:
            dataset = dataset.shuffle(len(ids), seed=seed, reshuffle_each_iteration=True)
    dataset = _shard_blocks(dataset, *shard)
    return dataset.map(read_element, num_parallel_calls=AUTOTUNE)


def _read_tfds(builder, split, shuffle, shuffle_buffer, seed, split_name):
    """Elements as in :func:`_read_folder` from a built TFDS dataset; files are named by split and id."""
    import tensorflow_datasets as tfds

    dataset = builder.as_dataset(
        split=split, shuffle_files=shuffle, read_config=tfds.ReadConfig(shuffle_seed=seed),
        decoders={"image": tfds.decode.SkipDecoding(), "label": tfds.decode.SkipDecoding()})
    if shuffle_buffer:  # shuffle the encoded examples: a buffer of bytes, not of pixels
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def decode(example):
        name = tf.strings.join([f"{builder.name}:{split_name} id ", example["id"]])
        image = tf.io.decode_image(example["image"], channels=3, expand_animations=False)
        label = tf.io.decode_png(example["label"], channels=1)[..., 0]
        return {"image": image, "label": label, "image_file": name, "label_file": name}

    return dataset.map(decode, num_parallel_calls=AUTOTUNE)


def _check(element, num_classes, ignore_index):
    """Fail naming the files when image and label sizes differ or a label value is no class id."""
    image, label = element["image"], element["label"]
    image_size, label_size = tf.shape(image)[:2], tf.shape(label)
    sizes_match = tf.debugging.Assert(tf.reduce_all(tf.equal(image_size, label_size)), [
        element["image_file"], "is", image_size, "(height, width) but its label",
        element["label_file"], "is", label_size, ". They must match."])
    # num_classes == 1 means binary with a sigmoid: ids 0 and 1.
    bad = (label >= max(num_classes, 2)) & (label != ignore_index)
    values_valid = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [
        element["label_file"], "holds the label value", tf.reduce_max(tf.where(bad, label, 0)),
        f"which is not a class id: num_classes={num_classes} and {ignore_index} means ignore. "
        f"Fix the mask (0/255 masks must become 0/1), or pass the right num_classes."])
    with tf.control_dependencies([sizes_match, values_valid]):
        return dict(element, label=tf.identity(label))


def _check_same_size(dataset):
    """Fail naming both files when an image's size differs from the first one's (batching needs one size)."""
    def step(first, element):
        first_size, first_file = first
        size = tf.shape(element["image"])[:2]
        is_first = first_size[0] < 0
        first_size = tf.where(is_first, size, first_size)
        first_file = tf.cond(is_first, lambda: element["image_file"], lambda: first_file)
        same = tf.debugging.Assert(tf.reduce_all(tf.equal(size, first_size)), [
            "Images of different sizes cannot be batched:", element["image_file"], "is", size,
            "(height, width) but", first_file, "is", first_size,
            f". Pass {option('image_size')} with a height and width to resize them, or {option('batch_size')} 1."])
        with tf.control_dependencies([same]):
            return (first_size, first_file), dict(element, image=tf.identity(element["image"]))

    return dataset.scan((tf.constant([-1, -1]), tf.constant("")), step)


def _resize(element, image_size):
    return dict(element, image=tf.image.resize(element["image"], image_size, "bilinear"),
                label=tf.image.resize(element["label"][..., None], image_size, "nearest")[..., 0])


def _to_model_types(element):
    return tf.cast(element["image"], tf.float32), tf.cast(element["label"], tf.int32)


def _pad_to_full_batches(dataset, count, total, batch_size, num_shards, image_size, ignore_index):
    """Append ignored items to a shard of ``count`` items so that it makes ``ceil(total / (num_shards x
    batch_size))`` full batches, ``total`` being the items of all shards.

    A filler item is a black image whose label is ``ignore_index`` everywhere:
    it counts for nothing in segzoo's losses and metrics.
    """
    missing = math.ceil(total / (num_shards * batch_size)) * batch_size - count
    if missing <= 0:
        return dataset
    filler = (tf.zeros((*image_size, 3), tf.float32), tf.fill(image_size, tf.constant(ignore_index, tf.int32)))
    return dataset.concatenate(tf.data.Dataset.from_tensors(filler).repeat(missing))


def load(source, split=TRAIN, batch_size=8, image_size=None, augment=None, shuffle=None, shuffle_buffer=1024,
         cache=False, deterministic=False, seed=0, num_classes=None, ignore_index=IGNORE_INDEX, data_dir=None,
         drop_remainder=False, repeat=False, val_ratio=None, num_shards=1, shard_index=0,
         pad_remainder=False, label_values=None) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``(image float32 (B, H, W, 3) 0..255, label int32 (B, H, W))``.

    Args:
        source: a :class:`DataSource` (:func:`open_source`: open it once for
            several pipelines), or what it opens: the path of an ``rgb/`` +
            ``gt/`` folder, a zip of one or a folder holding one such zip, or
            the name of a dataset built by :func:`segzoo.data.build_dataset`
            in ``data_dir``.
        split: ``"train"``, ``"validation"``, ``"test"`` (from a test list) or ``"all"`` (every item, for a
            held-out set; a TFDS source also takes TFDS split syntax such as
            ``"train[:50%]"``).
        batch_size: images per batch.
        image_size: ``(height, width)`` to resize to (image bilinear, label
            nearest), or ``None`` to keep sizes (then all images of a batch must
            have one size).
        augment: an :class:`OnlineAugment` (``"train"`` only; needs ``image_size``).
        shuffle: shuffle the items; ``None`` means ``split == "train"``.
        shuffle_buffer: items in the shuffle buffer of a TFDS source (encoded
            bytes) or of a cached source (decoded images: mind the memory). A
            folder source without cache shuffles its whole list of files.
        cache: ``False``, ``True`` (memory) or a file path: keep the decoded
            (and, without augmentation, resized) items after the first epoch.
        deterministic: the same batches in the same order on every run with
            the same ``seed`` (parallel maps keep their order).
        seed: seed of the shuffles, the folder split and every random augmentation.
        num_classes: label values must be below it (or ``ignore_index``);
            ``None`` takes the dataset's; 1 means binary (ids 0 and 1).
        ignore_index: label value of ignored pixels, used for padding; must be
            the dataset's.
        data_dir: TFDS data directory of a TFDS source.
        drop_remainder: drop the last, smaller batch.
        repeat: repeat forever (shuffled anew each epoch).
        val_ratio: validation fraction of the folder split (see :mod:`segzoo.data.splits`);
            ``None``: the default, or the :class:`DataSource`'s.
        num_shards: read only one of this many disjoint parts of the split
            (one per process of a multi-process run; see the module docstring).
        shard_index: which part, in ``[0, num_shards)``.
        pad_remainder: fill up with ignored items (black images, labels all
            ``ignore_index``) to ``ceil(items / (num_shards x batch_size))`` full
            batches in every shard (needs ``image_size``; not with ``repeat``):
            every batch then splits evenly across devices and processes (a
            mirrored evaluation fails on a device left without data), and the
            fillers count for nothing in segzoo's losses and metrics.
        label_values: a folder source's stored label value of each class, in
            order (``(0, 255)`` reads 0/255 masks as ids 0/1); ``None``: stored
            values are class ids (or the :class:`DataSource`'s).

    Raises:
        DataError: for a missing source, an empty split or an ``ignore_index``
            that is not the dataset's. Bad files raise when their batch is read
            (see the module docstring).
    """
    image_size = _check_load_arguments(split, batch_size, image_size, augment, num_shards, shard_index,
                                       pad_remainder, repeat)
    source = open_source(source, data_dir, val_ratio, seed, label_values)  # stays open while batches are read
    if ignore_index != source.info.ignore_index:
        raise DataError(f"{source.info.source}: its labels use ignore_index={source.info.ignore_index}, "
                        f"not {ignore_index}.")
    num_classes = source.info.num_classes if num_classes is None else int(num_classes)
    shuffle = split == TRAIN if shuffle is None else shuffle
    shuffle_later = shuffle and bool(cache)  # a cache keeps one order: shuffle after it
    repeat_files = repeat and not cache and source.builder is None
    read = _read_folder_split if source.builder is None else _read_tfds_split
    dataset, count, total = read(source, split, shuffle, shuffle_later, shuffle_buffer, seed, repeat_files,
                                 (num_shards, shard_index, batch_size))
    dataset = dataset.map(lambda e: _check(e, num_classes, ignore_index), num_parallel_calls=AUTOTUNE)
    if image_size is not None and augment is None:
        dataset = dataset.map(lambda e: _resize(e, image_size), num_parallel_calls=AUTOTUNE)
    if cache:
        dataset = dataset.cache("" if cache is True else os.fspath(cache))
    if shuffle_later:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat and not repeat_files:
        dataset = dataset.repeat()
    if augment is not None:
        dataset = _augmented(dataset, augment, image_size, ignore_index, seed, repeat, num_shards, shard_index,
                             batch_size)
    elif image_size is None and batch_size > 1:
        dataset = _check_same_size(dataset)
    dataset = dataset.map(_to_model_types, num_parallel_calls=AUTOTUNE)
    if pad_remainder:
        dataset = _pad_to_full_batches(dataset, count, total, batch_size, num_shards, image_size, ignore_index)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = deterministic
    return dataset.prefetch(AUTOTUNE).with_options(options)


def _check_load_arguments(split, batch_size, image_size, augment, num_shards, shard_index, pad_remainder, repeat):
    """Refuse arguments of :func:`load` that do not fit together; return ``image_size`` as a tuple (or ``None``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if image_size is not None:
        image_size = tuple(int(s) for s in image_size)
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size must be (height, width) with positive sizes, got {image_size}.")
    if augment is not None and (split != TRAIN or image_size is None):
        raise ValueError("augment applies to split='train' and crops to image_size: pass both.")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, num_shards={num_shards}), got {shard_index}.")
    if pad_remainder and (image_size is None or repeat):
        raise ValueError("pad_remainder makes full batches of a finite dataset: pass image_size, not repeat.")
    return image_size


def _read_folder_split(source, split, shuffle, shuffle_later, shuffle_buffer, seed, repeat, shard):
    """``(elements, items in this shard, items in all shards)`` of a folder or zip split (see :func:`_read_folder`);
    ``shuffle_later``: the items are shuffled after a cache, not here."""
    ids = source.ids(split)
    if not ids:
        raise DataError(f"{source.info.source}: the {split} split is empty.")
    num_shards, shard_index, block_size = shard
    count = sum(_in_shard(i, num_shards, shard_index, block_size) for i in range(len(ids)))
    return _read_folder(source.reader, ids, shuffle and not shuffle_later, seed, repeat=repeat, shard=shard), count, \
        len(ids)


def _read_tfds_split(source, split, shuffle, shuffle_later, shuffle_buffer, seed, repeat, shard):
    """As :func:`_read_folder_split`, for a TFDS dataset (its own split syntax; ``"all"``: every split)."""
    builder, (num_shards, shard_index, _) = source.builder, shard
    tfds_split = "+".join(builder.info.splits) if split == ALL else split
    part = tfds_split
    if num_shards > 1:
        import tensorflow_datasets as tfds

        part = tfds.even_splits(tfds_split, num_shards)[shard_index]
    dataset = _read_tfds(builder, part, shuffle, 0 if shuffle_later or not shuffle else shuffle_buffer, seed,
                         split_name=tfds_split)
    return dataset, builder.info.splits[part].num_examples, builder.info.splits[tfds_split].num_examples


def _augmented(dataset, augment, image_size, ignore_index, seed, repeat, num_shards, shard_index, batch_size):
    """``dataset`` with :func:`augment_element` applied to each element, each draw from its own seed."""
    if repeat:  # the n-th item of the stream gets the n-th draw, in every iterator
        first = tf.constant([seed, 0], tf.int64)
        seeds = tf.data.Dataset.counter().map(lambda n: tf.random.experimental.stateless_fold_in(first, n))
    else:  # each iteration (epoch) draws anew
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    # each item gets the draws it would get in an unsharded run (exact for folder sources)
    seeds = _shard_blocks(seeds, num_shards, shard_index, batch_size)
    return tf.data.Dataset.zip((dataset, seeds)).map(
        lambda e, s: augment_element(e, s, image_size, augment, ignore_index), num_parallel_calls=AUTOTUNE)
