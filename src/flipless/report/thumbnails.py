"""Thumbnails for the instance table: small PNG images as ``data:image/png;base64,`` URIs.

Two sources:

* :func:`grayscale_renderer` draws grey-level arrays of digits (8×8, scikit-learn) or
  MNIST / Fashion-MNIST (28×28), shaped [N, H, W], [N, 1, H, W] or flattened [N, H·W]: ink dark
  on white. uint8 values are grey levels as they are; other values in [0, 1] are scaled by
  255; anything else by the array's own minimum and maximum.
* a user callable ``renderer(index) -> PIL.Image | bytes | str`` for row ``index`` of the
  comparison: a Pillow image (encoded as PNG here), PNG bytes, or a PNG data URI.

Every result is checked to be a PNG before it is embedded, so the report can only ever show
``data:image/png;base64,`` images, never a URL.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from flipless.errors import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI_PREFIX = "data:image/png;base64,"
#: Images the default renderer knows: side lengths of square grey-level images.
KNOWN_SIDES = (8, 28)

Renderer = Callable[[int], Any]


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,…`` for PNG bytes (checked to start with the PNG signature)."""
    if not isinstance(png, bytes) or not png.startswith(PNG_SIGNATURE):
        raise InputError(
            "A thumbnail is not PNG data (it does not start with the PNG signature); expected "
            "PNG bytes, a Pillow image or a 'data:image/png;base64,' URI."
        )
    return DATA_URI_PREFIX + base64.b64encode(png).decode("ascii")


def checked_data_uri(uri: str) -> str:
    """Return ``uri`` when it is a well-formed base64 PNG data URI; raise InputError otherwise."""
    if not uri.startswith(DATA_URI_PREFIX):
        raise InputError(
            f"Thumbnail string starts with {uri[:40]!r}; expected a '{DATA_URI_PREFIX}' URI "
            "(URLs and other image types are not embedded)."
        )
    try:
        png = base64.b64decode(uri[len(DATA_URI_PREFIX) :], validate=True)
    except binascii.Error as error:
        raise InputError(f"Thumbnail data URI is not valid base64 ({error}).") from error
    return png_data_uri(png)


def encode_thumbnail(image: Any) -> str:
    """A renderer's result (Pillow image, PNG bytes or PNG data URI) as a checked data URI."""
    from PIL import Image

    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        return png_data_uri(buffer.getvalue())
    if isinstance(image, bytes):
        return png_data_uri(image)
    if isinstance(image, str):
        return checked_data_uri(image)
    raise InputError(
        f"A thumbnail renderer returned {type(image).__name__}; expected a PIL.Image, PNG bytes "
        "or a 'data:image/png;base64,' string."
    )


def grayscale_images(inputs: Any) -> np.ndarray:
    """Grey levels as uint8 [N, side, side] from digit / MNIST-like arrays (see the module doc)."""
    array = np.asarray(inputs.numpy() if hasattr(inputs, "numpy") else inputs)
    if array.dtype.kind not in "uif" or array.ndim < 2:
        raise InputError(
            f"inputs of shape {array.shape} and dtype {array.dtype}; expected numeric images "
            "[N, H, W], [N, 1, H, W] or [N, H·W] (pass renderer= for anything else)."
        )
    size = array.shape[0]
    pixels = int(np.prod(array.shape[1:]))
    side = next((s for s in KNOWN_SIDES if s * s == pixels), None)
    if side is None or (array.ndim == 4 and array.shape[1] != 1):
        raise InputError(
            f"inputs of shape {array.shape}: the default thumbnails draw 8×8 or 28×28 grey "
            "images; pass renderer=callable(index) -> PIL.Image for other inputs."
        )
    images = array.reshape(size, side, side)
    if images.dtype == np.uint8:
        return images
    values = images.astype(np.float64)
    low, high = (0.0, 1.0) if values.size == 0 else (float(values.min()), float(values.max()))
    if low >= 0.0 and high <= 1.0:
        low, high = 0.0, 1.0
    span = high - low if high > low else 1.0
    return np.clip(np.rint((values - low) / span * 255.0), 0, 255).astype(np.uint8)


def grayscale_renderer(inputs: Any) -> Renderer:
    """A renderer for digit / MNIST-like arrays: ink (high values) dark on white."""
    from PIL import Image

    images = grayscale_images(inputs)

    def render(index: int) -> Any:
        return Image.fromarray(255 - images[index])  # uint8 [H, W]: mode "L"

    return render


def render_thumbnails(renderer: Renderer, rows: Iterable[int]) -> dict[int, str]:
    """Data URIs of the given rows, keyed by row; a renderer's error names the row."""
    thumbnails = {}
    for row in rows:
        try:
            image = renderer(int(row))
        except (IndexError, KeyError) as error:
            raise InputError(
                f"The thumbnail renderer failed for row {int(row)} ({error!r}); expected one "
                "image per row of the comparison."
            ) from error
        thumbnails[int(row)] = encode_thumbnail(image)
    return thumbnails
