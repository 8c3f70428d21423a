"""Render a scene window to RGB and write the whole scene as a tiled, compressed GeoTIFF, block row by
block row: memory stays flat whatever the image size, and the same scene gives the same bytes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..engine.errors import InputError
from ..engine.progress import CancelToken, EventSink, emit, progress_event
from .landcover import PALETTE, TEXTURE as _TEXTURE, render_ground
from .noise import hash2, periodic_table, unit
from .objects import draw_extent, draw_object
from .scene import Scene

BLOCK = 256
CHUNK_WIDTH = 2048           # columns rendered at once: big enough to amortise Python, small in memory
TABLE = 1024                 # period of the texture tables (invisible under the land-cover pattern)
GRAIN = 0.07                 # sensor noise: relative brightness, peak to peak
TEXTURE_GAIN = 1.4
CREATION_OPTIONS = ["TILED=YES", f"BLOCKXSIZE={BLOCK}", f"BLOCKYSIZE={BLOCK}", "COMPRESS=DEFLATE", "ZLEVEL=1",
                    "PREDICTOR=2", "PHOTOMETRIC=RGB", "INTERLEAVE=PIXEL", "BIGTIFF=IF_SAFER", "NUM_THREADS=2"]


TEXTURE = (_TEXTURE * TEXTURE_GAIN).astype(np.float32)


class WindowRenderer:
    """Precomputed per-scene tables and spatial lookups; render(x0, y0, w, h) -> uint8 [h, w, 3]."""

    def __init__(self, scene: Scene):
        self.scene = scene
        # texture and sensor grain as wrap-extended tables: any window is then a zero-copy slice
        texture = periodic_table(TABLE, 8, scene.seed + 71) - np.float32(0.5)
        grain = (unit(hash2(np.arange(TABLE)[None, :], np.arange(TABLE)[:, None], scene.seed + 73))
                 - np.float32(0.5)) * np.float32(GRAIN)
        self.texture = np.pad(texture, ((0, BLOCK + 2), (0, CHUNK_WIDTH + 2)), mode="wrap")
        self.grain = np.pad(grain, ((0, BLOCK + 2), (0, CHUNK_WIDTH + 2)), mode="wrap")
        self.patches = sorted(scene.patches, key=lambda p: p.layer)
        self.patch_boxes = np.array([(p.x1, p.y1, p.x2, p.y2) for p in self.patches], dtype=np.float64).reshape(-1, 4)
        self.objects = list(scene.objects)
        self.object_boxes = np.array([draw_extent(o) for o in self.objects], dtype=np.float64).reshape(-1, 4)

    @staticmethod
    def _hits(boxes: np.ndarray, x1, y1, x2, y2) -> np.ndarray:
        return np.nonzero((boxes[:, 0] < x2) & (boxes[:, 2] > x1) & (boxes[:, 1] < y2) & (boxes[:, 3] > y1))[0]

    def _table(self, table, x0, y0, w, h):
        if h > BLOCK + 2 or w > CHUNK_WIDTH + 2:
            raise ValueError(f"window {w}x{h} larger than the renderer's chunk")
        return table[y0 % TABLE:y0 % TABLE + h, x0 % TABLE:x0 % TABLE + w]

    def render(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        # one pixel of margin all round feeds the blur, so neighbouring windows agree at their seams
        rx, ry, rw, rh = x0 - 1, y0 - 1, w + 2, h + 2
        patches = [self.patches[i] for i in self._hits(self.patch_boxes, rx, ry, rx + rw, ry + rh)]
        cls, shade = render_ground(self.scene, rx, ry, rw, rh, patches)
        tex = np.take(TEXTURE, cls)
        tex *= self._table(self.texture, rx, ry, rw, rh)
        shade += tex
        # sensor noise, multiplicative: cheaper than per-channel and as convincing
        shade += self._table(self.grain, rx, ry, rw, rh)
        rgb = np.take(PALETTE, cls, axis=0)
        rgb *= shade[..., None]
        for i in self._hits(self.object_boxes, rx, ry, rx + rw, ry + rh):
            draw_object(rgb, rx, ry, self.objects[i])
        # slight optical blur: separable [1 2 1] / 4, in place where possible
        rows = rgb[1:-1] * 2.0
        rows += rgb[:-2]
        rows += rgb[2:]
        out = rows[:, 1:-1] * 2.0
        out += rows[:, :-2]
        out += rows[:, 2:]
        out *= 1.0 / 16.0
        out += 0.5
        np.clip(out, 0, 255, out=out)
        return out.astype(np.uint8)


def crs_wkt(epsg: int) -> str:
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(int(epsg))
    return srs.ExportToWkt()


_WORKER_RENDERER = None


def _init_worker(scene: Scene) -> None:
    global _WORKER_RENDERER
    _WORKER_RENDERER = WindowRenderer(scene)


def render_strip(renderer: WindowRenderer, y0: int, chunk_width: int = CHUNK_WIDTH) -> np.ndarray:
    """One block row (256 rows, full width) as uint8 [h, width, 3], rendered chunk by chunk."""
    scene = renderer.scene
    h = min(BLOCK, scene.height - y0)
    strip = np.empty((h, scene.width, 3), dtype=np.uint8)
    for x0 in range(0, scene.width, chunk_width):
        w = min(chunk_width, scene.width - x0)
        strip[:, x0:x0 + w] = renderer.render(x0, y0, w, h)
    return strip


def _worker_strip(y0: int) -> np.ndarray:
    return render_strip(_WORKER_RENDERER, y0)


def can_spawn_workers() -> bool:
    """Inside QGIS sys.executable is QGIS itself, not Python: render in-process there."""
    import sys

    return "python" in Path(sys.executable).name.lower()


def default_workers(scene: Scene) -> int:
    # worker start-up (~1 s) only pays off on big scenes
    if scene.width * scene.height < 4096 * 4096 or not can_spawn_workers():
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def _strips(scene: Scene, workers: int, cancel: Optional[CancelToken]):
    """Yield (y0, strip) in order; with workers > 1, at most 2 strips per worker are in flight."""
    rows = list(range(0, scene.height, BLOCK))
    if workers <= 1:
        renderer = WindowRenderer(scene)
        for y0 in rows:
            if cancel is not None:
                cancel.raise_if_cancelled()
            yield y0, render_strip(renderer, y0)
        return
    import multiprocessing

    # the noise products are tiny matrices: BLAS threads would only spin against the other worker
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    ctx = multiprocessing.get_context("spawn")      # no fork: safe inside QGIS and with GDAL threads
    with ctx.Pool(workers, initializer=_init_worker, initargs=(scene,)) as pool:
        pending = []
        queue = iter(rows)
        for y0 in queue:
            pending.append((y0, pool.apply_async(_worker_strip, (y0,))))
            if len(pending) >= 2 * workers:
                break
        while pending:
            if cancel is not None and cancel.cancelled:
                pool.terminate()
                cancel.raise_if_cancelled()
            y0, result = pending.pop(0)
            strip = result.get()
            nxt = next(queue, None)
            if nxt is not None:
                pending.append((nxt, pool.apply_async(_worker_strip, (nxt,))))
            yield y0, strip


def write_geotiff(scene: Scene, path, events: Optional[EventSink] = None,
                  cancel: Optional[CancelToken] = None, workers: Optional[int] = None) -> Path:
    """Write the scene as `path` (tiled 256 x 256, DEFLATE + predictor, CRS + geotransform).

    Strips of one block row are rendered (in `workers` processes) and written in order; GDAL's block
    cache is capped, so memory stays flat. The bytes depend only on the scene, not on `workers`.
    """
    from osgeo import gdal

    gdal.UseExceptions()
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(f"{path}: synthetic scenes are GeoTIFFs; give a name ending in .tif")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent} does not exist: create the folder first.")
    workers = default_workers(scene) if workers is None else max(1, int(workers))
    if not can_spawn_workers():
        workers = 1
    tmp = path.with_name(path.name + ".part")
    old_cache = gdal.GetCacheMax()
    gdal.SetCacheMax(64 * 1024 * 1024)        # a couple of block rows; keeps memory flat
    ds = None
    try:
        ds = gdal.GetDriverByName("GTiff").Create(str(tmp), scene.width, scene.height, 3, gdal.GDT_Byte,
                                                  CREATION_OPTIONS)
        ds.SetGeoTransform(scene.geotransform)
        ds.SetProjection(crs_wkt(scene.epsg))
        for y0, strip in _strips(scene, workers, cancel):
            h = strip.shape[0]
            ds.WriteRaster(0, y0, scene.width, h, strip.tobytes(), scene.width, h, gdal.GDT_Byte, [1, 2, 3],
                           buf_pixel_space=3, buf_line_space=3 * scene.width, buf_band_space=1)
            emit(events, progress_event("render", (y0 + h) / scene.height, f"rows {y0 + h}/{scene.height}"))
        ds.FlushCache()
        ds = None
        os.replace(tmp, path)
    except BaseException:
        ds = None
        if tmp.exists():
            tmp.unlink()
        raise
    finally:
        gdal.SetCacheMax(old_cache)
    return path
