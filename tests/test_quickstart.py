"""The quickstart's choices that are not covered by running it (tests/test_install.py runs it from the wheel)."""

import os

import pytest

from segzoo.errors import ConfigError
from segzoo.quickstart import QuickstartConfig, run_quickstart, training_crop


def test_the_training_crop_defaults_to_four_fifths_of_the_image_in_multiples_of_32():
    assert training_crop((240, 320)) == (192, 256)
    assert training_crop((128, 160)) == (96, 128)
    assert training_crop((40, 40)) == (32, 32)  # never below one multiple


def test_a_given_crop_is_kept_and_the_image_size_means_whole_images():
    assert training_crop((240, 320), (160, 224)) == (160, 224)
    assert training_crop((240, 320), (240, 320)) == (240, 320)
    assert QuickstartConfig().crop_size is None  # the default is derived from --image_size


def test_training_settings_that_cannot_work_are_refused_before_the_sample_is_made(tmp_path):
    with pytest.raises(ConfigError, match="crop_size='0 0'"):
        run_quickstart(QuickstartConfig(out=str(tmp_path / "qs"), crop_size=(0, 0)))
    assert not os.path.exists(tmp_path / "qs")
