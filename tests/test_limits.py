"""segexport.limits: every bound named in its one-line error, memory estimates against a given machine."""

from __future__ import annotations

import pytest

from segexport import limits
from segexport.errors import ConfigError
from segexport.recipe import load_recipe, resolve_recipe

GIB = 2**30


@pytest.mark.parametrize("seed", [0, 1, limits.SEED_MAX])
def test_seeds_in_range_pass_unchanged(seed):
    assert limits.check_seed(seed) == seed and limits.check_seed(None) is None


@pytest.mark.parametrize("seed", [-1, limits.SEED_MAX + 1, 2**64, 2**70, True, 1.5])
def test_seeds_out_of_range_name_the_range(seed):
    with pytest.raises(ConfigError, match=r"^--seed .* is outside 0\.\.4294967295 \(2\*\*32 - 1\); pass a seed"):
        limits.check_seed(seed)


@pytest.mark.parametrize("value", [0, -3, 11, 10**30, False, 2.0])
def test_counts_outside_their_range_name_both_ends(value):
    with pytest.raises(ConfigError, match=r"^--runs must be an integer from 1 to 10, got "):
        limits.check_count(value, "--runs", 10)


def test_counts_inside_their_range_pass_unchanged():
    assert [limits.check_count(v, "--runs", 10) for v in (1, 10, None)] == [1, 10, None]
    assert limits.check_count(0, "--max-fallback", 5, minimum=0) == 0


@pytest.mark.parametrize("size", [(0, 64), (64, limits.SIDE_MAX + 1), (100000, 100000), (-1, 5)])
def test_input_sides_outside_1_to_8192_are_refused(size):
    with pytest.raises(ConfigError, match=r"^--input-size .*: each side must be 1 to 8192 pixels; pass a smaller"):
        limits.check_input_size(size)


def test_input_sizes_inside_pass_unchanged():
    assert limits.check_input_size((1, limits.SIDE_MAX)) == (1, 8192) and limits.check_input_size(None) is None


def test_estimate_is_per_pixel_times_batch():
    assert limits.estimate_bytes((64, 32), 3) == 64 * 32 * 3 * limits.INFERENCE_BYTES_PER_PIXEL


def test_available_memory_reads_memavailable(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n")
    assert limits.available_memory(meminfo) == 2048 * 1024


def test_available_memory_falls_back_to_free_pages(tmp_path):
    got = limits.available_memory(tmp_path / "missing")
    assert got is None or got > 0


def test_memory_check_names_estimate_available_and_fix():
    with pytest.raises(ConfigError) as info:
        limits.check_inference_memory((1024, 1024), 8, "a smaller --input-size or --batch", where="m.onnx: ",
                                      available=GIB)
    assert str(info.value) == ("m.onnx: a forward pass at 1024x1024 with batch 8 needs about 32.0 GiB of memory "
                               "(estimate), more than half of the 1.0 GiB available; pass a smaller --input-size "
                               "or --batch")
    limits.check_inference_memory((1024, 1024), 8, "fix", available=64 * GIB)  # exactly enough


def test_decoded_images_count_the_label_rows():
    needed = 1000 * 64 * 64 * (limits.DECODED_BYTES_PER_PIXEL + 3 * limits.LABEL_BYTES_PER_PIXEL)
    limits.check_decoded_images(1000, (64, 64), "--images", rows=3, available=2 * needed)
    with pytest.raises(ConfigError, match=r"^--images 1001 \(64x64 images, held at once\) needs .*pass a smaller --images$"):
        limits.check_decoded_images(1001, (64, 64), "--images", rows=3, available=2 * needed)


def test_an_unknown_machine_is_not_refused(monkeypatch):
    monkeypatch.setattr(limits, "available_memory", lambda: None)
    limits.check_memory(10**18, "anything", "nothing")


@pytest.mark.parametrize("override, match", [
    ({"seed": 2**64}, r"seed \(--seed\) 18446744073709551616 is outside"),
    ({"input_size": (100000, 100000)}, r"input_size \(--input-size\) 100000x100000: each side"),
    ({"epochs": limits.EPOCHS_MAX + 1}, r"epochs \(--epochs\) must be an integer from 1 to 10000"),
    ({"batch_size": 0}, r"batch_size \(--batch-size\) must be an integer from 1 to 1024"),
    ({"train_images": limits.IMAGES_MAX + 1}, r"train_images \(--train-images\) must be an integer from 1"),
    ({"val_images": 0}, r"val_images \(--val-images\) must be an integer from 1"),
])
def test_recipe_overrides_are_bounded(override, match):
    with pytest.raises(ConfigError, match=match):
        resolve_recipe(load_recipe("fcn8s"), **override)


def test_recipe_file_bounds_name_the_file(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("seed = -1\n")
    with pytest.raises(ConfigError, match=rf"^{path}: seed \(--seed\) -1 is outside"):
        load_recipe("fcn8s", path)
