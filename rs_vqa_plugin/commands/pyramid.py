"""`pyramid IMAGE`: describe a raster and the Dynamic Image Pyramid the engine would read from it."""

from __future__ import annotations

import json
import warnings

HELP = "describe a raster (bands, CRS, overviews) and its image pyramid: levels, scales, tile grids"


def add_arguments(parser):
    parser.add_argument("image", help="raster file GDAL can open (GeoTIFF, COG, VRT, ...)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tile-size", type=int, default=336, help="tile size B of the vision encoder (336)")
    parser.add_argument("--token-grid", type=int, default=12, help="pooled tokens per tile side (12)")
    parser.add_argument("--cache-dir", default=None, help="overview cache folder to look in")


def pyramid_report(image, tile_size=336, token_grid=12, cache_dir=None) -> dict:
    """describe() plus the plan; nothing is built or written."""
    from ..engine.pyramid import plan_pyramid
    from ..engine.raster import describe

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no-CRS note is in info["warnings"]
        info = describe(image, cache_dir=cache_dir)
    try:
        plan = plan_pyramid(info["width"], info["height"], tile_size, token_grid)
    except ValueError as exc:
        from ..engine.errors import InputError
        raise InputError(f"--tile-size/--token-grid: {exc}") from None
    info.update(plan.to_dict())
    return info


def run(args) -> int:
    report = pyramid_report(args.image, args.tile_size, args.token_grid, args.cache_dir)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    crs = report["crs"]["authority"] or ("custom CRS" if report["crs"]["wkt"] else "no CRS")
    print(f"{report['path']}: {report['width']} x {report['height']} px, {report['band_count']} band(s) "
          f"{'/'.join(report['data_types'])}, {crs}, driver {report['driver']}")
    ov = report["overviews"]
    print(f"  shown as RGB: bands {report['rgb_bands']}; overviews: {ov['location']} {ov['factors'] or ''}")
    t = report["thumbnail"]
    print(f"  tile {report['tile_size']} px, thumbnail {t['content_size'][0]} x {t['content_size'][1]}")
    print("  level  long side   scale     content (w x h)   tiles (rows x cols)")
    for lv in report["levels"]:
        w, h = lv["content_size"]
        print(f"  {lv['index']:>5}  {lv['long_side']:>9}  {lv['scale']:>7.4f}  {w:>8} x {h:<8}  "
              f"{lv['tile_grid'][0]:>4} x {lv['tile_grid'][1]:<4} = {lv['tiles']}")
    for note in report["warnings"]:
        print(f"  warning: {note}")
    return 0
