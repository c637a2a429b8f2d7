"""The dataset folder that ``tfds build`` is pointed at: see :mod:`segzoo.data.tfds_builder`."""
