"""Draw one radiograph of a VinDr-CXR or ChestX-ray14 folder with its boxes (``rgct data show``).

The film is drawn as the readers give it (:func:`rgct.data.cxr.load_radiograph`: lungs dark, bone
bright), each box with its class (VinDr-CXR training boxes also with their reader agreement), so
the display path and the fused boxes can be checked by eye. Small films are enlarged (nearest
pixel) to at least :data:`MIN_SIDE` pixels.

Example::

    save_film("/data/vindr-cxr/1.0.0", "000434271f63a181c1bb8c9a6c8f7e2b", "film.png")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rgct.data.cxr import Box, load_radiograph
from rgct.data.io import DataError

MIN_SIDE = 512
COLORS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48))


def find_film(root: str | Path, layout: str, name: str) -> tuple[Path, list[Box]]:
    """The file and boxes of image ``name`` (VinDr-CXR ``image_id``, ChestX-ray14 ``Image Index``).

    Raises:
        DataError: no such image in the folder's tables (or left out: its problem named).
    """
    if layout == "vindr-cxr":
        from rgct.data.vindr import VINDR_SPLITS, load_vindr

        problems = []
        for split in VINDR_SPLITS:
            index = load_vindr(root, split, image_ids={name})
            if name in index.images:
                return index.images[name].path, index.images[name].boxes
            problems += [p.message for p in index.problems if name in p.message]
    elif layout == "chestxray14":
        from rgct.data.chestxray14 import load_chestxray14

        index = load_chestxray14(root, names={name})
        if name in index.images:
            return index.images[name].path, index.images[name].boxes
        problems = [p.message for p in index.problems if name in p.message]
    else:
        raise ValueError(f"layout must be 'vindr-cxr' or 'chestxray14', got {layout!r}")
    why = f": {problems[0]}" if problems else ""
    raise DataError(f"{root}: no usable image {name!r} in the {layout} tables{why}")


def save_film(root: str | Path, layout: str, name: str, out_png: str | Path) -> Path:
    """Draw image ``name`` with its boxes to ``out_png``; return its path."""
    path, boxes = find_film(root, layout, name)
    film = load_radiograph(path)
    scale = max(1, -(-MIN_SIDE // max(film.shape)))
    grey = np.rint(255 * film.array).astype(np.uint8).repeat(scale, 0).repeat(scale, 1)
    image = Image.fromarray(grey).convert("RGB")
    draw = ImageDraw.Draw(image)
    for k, box in enumerate(boxes):
        color = COLORS[k % len(COLORS)]
        x1, y1, x2, y2 = (v * scale for v in box.coords)
        draw.rectangle((x1, y1, x2, y2), outline=color, width=max(1, scale // 2))
        agreement = f" ({box.readers} readers)" if box.readers > 1 and not box.consensus else ""
        draw.text((x1 + 2, max(y1 - 12, 0)), box.class_name + agreement, fill=color)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    image.save(out_png)
    return out_png
