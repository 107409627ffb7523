"""Thumbnails: grey-level arrays and user renderers become checked PNG data URIs."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from flipless.errors import InputError
from flipless.report.thumbnails import (
    DATA_URI_PREFIX,
    checked_data_uri,
    encode_thumbnail,
    grayscale_images,
    grayscale_renderer,
    render_thumbnails,
)


def decode(uri: str) -> np.ndarray:
    assert uri.startswith(DATA_URI_PREFIX)
    image = Image.open(io.BytesIO(base64.b64decode(uri[len(DATA_URI_PREFIX) :])))
    assert image.format == "PNG"
    return np.asarray(image)


def test_digit_images_in_zero_one_are_scaled_by_255_and_drawn_dark_on_white():
    images = np.zeros((2, 1, 8, 8), dtype=np.float32)  # the digits loader's shape and range
    images[0, 0, 3, 4] = 1.0
    images[1, 0, 0, 0] = 0.5
    grey = grayscale_images(images)
    assert grey.shape == (2, 8, 8) and grey.dtype == np.uint8
    assert grey[0, 3, 4] == 255 and grey[1, 0, 0] == 128  # rint(127.5) = 128 (half to even)
    pixels = decode(encode_thumbnail(grayscale_renderer(images)(0)))
    assert pixels.shape == (8, 8) and pixels[3, 4] == 0 and pixels[0, 0] == 255


def test_other_shapes_and_ranges():
    flat = np.arange(2 * 784).reshape(2, 784).astype(np.float64)  # flattened 28×28, 0..1567
    grey = grayscale_images(flat)
    assert grey.shape == (2, 28, 28)
    assert grey[0, 0, 0] == 0 and grey[1, 27, 27] == 255  # min-max over the whole array
    assert grey[0, 0, 1] == round(1 / 1567 * 255)
    raw = np.full((1, 8, 8), 200, dtype=np.uint8)
    assert (grayscale_images(raw) == 200).all()  # uint8 grey levels are kept


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (np.zeros((3, 10, 10)), "8×8 or 28×28"),
        (np.zeros((3, 3, 8, 8)), "8×8 or 28×28"),
        (np.array(["a", "b"]), "numeric images"),
        (np.zeros(5), "numeric images"),
    ],
)
def test_inputs_the_default_renderer_cannot_draw(inputs, message):
    with pytest.raises(InputError, match=message):
        grayscale_images(inputs)


def test_renderer_results_of_every_kind():
    rgb = Image.new("RGB", (4, 3), (10, 20, 30))
    uri = encode_thumbnail(rgb)
    assert decode(uri).shape == (3, 4, 3)
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    assert encode_thumbnail(buffer.getvalue()) == DATA_URI_PREFIX + base64.b64encode(
        buffer.getvalue()
    ).decode("ascii")
    assert checked_data_uri(uri) == uri


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (b"GIF89a....", "not PNG data"),
        ("https://example.org/x.png", "expected a 'data:image/png;base64,' URI"),
        ("data:image/svg+xml;base64,PHN2Zz4=", "expected a 'data:image/png;base64,' URI"),
        ("data:image/png;base64,@@@", "not valid base64"),
        ("data:image/png;base64," + base64.b64encode(b"<svg/>").decode(), "not PNG data"),
        (np.zeros((2, 2)), "expected a PIL.Image"),
    ],
)
def test_anything_but_a_png_is_refused(result, message):
    with pytest.raises(InputError, match=message):
        encode_thumbnail(result)


def test_render_thumbnails_keys_rows_and_names_a_failing_row():
    images = np.zeros((3, 8, 8))
    found = render_thumbnails(grayscale_renderer(images), [0, 2])
    assert sorted(found) == [0, 2]
    with pytest.raises(InputError, match="failed for row 3"):
        render_thumbnails(grayscale_renderer(images), [3])
