"""Side-by-side crops for a question: the 336 px thumbnail of the whole scene (box drawn), the same
region as the thumbnail holds it (upsampled) and the full-resolution region - written as PNG by GDAL."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple

import numpy as np

PANEL = 336
BOX_COLOR = (255, 40, 40)


def _read(ds, x, y, w, h, out_w, out_h) -> np.ndarray:
    from osgeo import gdal

    data = ds.ReadAsArray(int(x), int(y), int(w), int(h), buf_xsize=int(out_w), buf_ysize=int(out_h),
                          resample_alg=gdal.GRIORA_Average)
    return np.ascontiguousarray(np.transpose(data, (1, 2, 0)))


def thumbnail(ds, size: int = PANEL) -> Tuple[np.ndarray, float]:
    """The whole raster, long side = size, pasted top-left on a size x size canvas; and its scale."""
    w, h = ds.RasterXSize, ds.RasterYSize
    scale = size / max(w, h)
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[:ch, :cw] = _read(ds, 0, 0, w, h, cw, ch)
    return canvas, scale


def region_of(box: Sequence[int], width: int, height: int, min_side: int = 96) -> Tuple[int, int, int, int]:
    """A square around the box with some context, inside the image: (x, y, side, side)."""
    x1, y1, x2, y2 = box
    side = int(max(min_side, 2.0 * max(x2 - x1, y2 - y1)))
    side = min(side, width, height)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    x = int(np.clip(cx - side / 2, 0, width - side))
    y = int(np.clip(cy - side / 2, 0, height - side))
    return x, y, side, side


def draw_rect(img: np.ndarray, x1, y1, x2, y2, color=BOX_COLOR, thickness: int = 1) -> None:
    h, w = img.shape[:2]
    x1, y1 = int(np.clip(np.floor(x1), 0, w - 1)), int(np.clip(np.floor(y1), 0, h - 1))
    x2, y2 = int(np.clip(np.ceil(x2), x1 + 1, w)), int(np.clip(np.ceil(y2), y1 + 1, h))
    for t in range(thickness):
        img[max(y1 - t, 0), x1:x2] = color
        img[min(y2 - 1 + t, h - 1), x1:x2] = color
        img[y1:y2, max(x1 - t, 0)] = color
        img[y1:y2, min(x2 - 1 + t, w - 1)] = color


def _upsample(img: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a small square patch to size x size (blocky on purpose)."""
    idx_y = (np.arange(size) * img.shape[0] // size).clip(0, img.shape[0] - 1)
    idx_x = (np.arange(size) * img.shape[1] // size).clip(0, img.shape[1] - 1)
    return img[idx_y][:, idx_x]


def question_panels(ds, box: Sequence[int], thumb: np.ndarray, scale: float) -> np.ndarray:
    """[thumbnail with the region marked | region as seen in the thumbnail | region at full resolution]."""
    width, height = ds.RasterXSize, ds.RasterYSize
    x, y, side, _ = region_of(box, width, height)
    left = thumb.copy()
    draw_rect(left, x * scale - 2, y * scale - 2, (x + side) * scale + 2, (y + side) * scale + 2, thickness=2)
    # the thumbnail's own pixels for the region (at least 1 px), blown up
    tx1, ty1 = int(x * scale), int(y * scale)
    tx2, ty2 = max(tx1 + 1, int(np.ceil((x + side) * scale))), max(ty1 + 1, int(np.ceil((y + side) * scale)))
    middle = _upsample(thumb[ty1:ty2, tx1:tx2], PANEL)
    if side >= PANEL:
        right = _read(ds, x, y, side, side, PANEL, PANEL)
    else:
        right = _upsample(_read(ds, x, y, side, side, side, side), PANEL)
    f = PANEL / side
    bx1, by1, bx2, by2 = box
    draw_rect(right, (bx1 - x) * f - 2, (by1 - y) * f - 2, (bx2 - x) * f + 2, (by2 - y) * f + 2)
    gap = np.full((PANEL, 6, 3), 255, dtype=np.uint8)
    return np.concatenate([left, gap, middle, gap, right], axis=1)


def write_png(pixels: np.ndarray, path, zlevel: int = 9) -> Path:
    from osgeo import gdal

    h, w, bands = pixels.shape
    mem = gdal.GetDriverByName("MEM").Create("", w, h, bands, gdal.GDT_Byte)
    for b in range(bands):
        mem.GetRasterBand(b + 1).WriteArray(pixels[:, :, b])
    gdal.GetDriverByName("PNG").CreateCopy(str(path), mem, options=[f"ZLEVEL={zlevel}"])
    aux = Path(str(path) + ".aux.xml")
    if aux.exists():
        aux.unlink()
    return Path(path)
