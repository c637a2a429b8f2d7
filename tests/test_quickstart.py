"""The quickstart's choices that are not covered by running it (tests/test_install.py runs it from the wheel)."""

from segzoo.quickstart import QuickstartConfig, training_crop


def test_the_training_crop_defaults_to_four_fifths_of_the_image_in_multiples_of_32():
    assert training_crop((240, 320)) == (192, 256)
    assert training_crop((128, 160)) == (96, 128)
    assert training_crop((40, 40)) == (32, 32)  # never below one multiple


def test_a_given_crop_is_kept_and_the_image_size_means_whole_images():
    assert training_crop((240, 320), (160, 224)) == (160, 224)
    assert training_crop((240, 320), (240, 320)) == (240, 320)
    assert QuickstartConfig().crop_size is None  # the default is derived from --image_size
