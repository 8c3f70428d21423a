"""Which bands the model sees as red, green and blue, and how a palette band becomes colour.

Without an explicit choice the raster is asked, most trusted first: its colour interpretation, a
palette (class map), the bands' wavelengths (GDAL's IMAGERY CENTRAL_WAVELENGTH_UM, the SENTINEL2
and ENVI drivers' WAVELENGTH items, "665 nm" in a description), their names ("Red", "Green",
"Blue"), then sensor band codes (B4/B3/B2 on Landsat 8-9 and Sentinel-2, B3/B2/B1 on Landsat 4-7)
when the sensor is known; only then the first three bands. The choice and its reason go into the
answer's trace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from osgeo import gdal

from .errors import InputError

COLOURS = ("red", "green", "blue")
# Central wavelengths (micrometres) accepted for each colour, and the centre preferred when a
# raster has several candidates (Landsat 8's coastal band 0.443 loses to its blue band 0.482).
WAVELENGTH_RANGES = {"red": (0.60, 0.70), "green": (0.51, 0.60), "blue": (0.40, 0.51)}
WAVELENGTH_CENTRES = {"red": 0.655, "green": 0.56, "blue": 0.48}
# Sensor band numbers of red, green and blue.
SENSOR_CODES = {"landsat-oli": ("4", "3", "2"), "sentinel-2": ("4", "3", "2"), "landsat-tm": ("3", "2", "1")}
SENSOR_NAMES = {"landsat-oli": "Landsat 8-9 OLI", "sentinel-2": "Sentinel-2 MSI", "landsat-tm": "Landsat 4-7 TM/ETM+"}


@dataclass
class BandChoice:
    """1-based bands shown as R, G, B (one band: grey, or colours through its palette) and why."""

    bands: List[int]
    reason: str
    names: List[str] = field(default_factory=list)
    palette: bool = False

    def to_dict(self) -> dict:
        shown = "palette colours" if self.palette else ("grey" if len(self.bands) == 1 else "R, G, B")
        return {"bands": list(self.bands), "shown_as": shown, "from": self.reason, "names": list(self.names)}

    def describe(self) -> str:
        d = self.to_dict()
        names = f" ({', '.join(n for n in self.names if n)})" if any(self.names) else ""
        return f"band{'s' if len(self.bands) > 1 else ''} {', '.join(map(str, self.bands))}{names} as {d['shown_as']}, from {self.reason}"


def _fail(path, what: str, todo: str) -> InputError:
    return InputError(f"{path}: {what}. {todo}")


def _band_text(band) -> str:
    parts = [band.GetDescription() or ""]
    md = band.GetMetadata() or {}
    parts += [str(v) for k, v in md.items() if k.lower() in ("bandname", "band_name", "name", "long_name", "standard_name")]
    return " ".join(p for p in parts if p).strip()


def _unit_scale(unit: str, value: float) -> float:
    unit = unit.strip().lower()
    if unit.startswith("nano") or unit == "nm":
        return 1e-3
    if unit.startswith(("micro", "um", "µm", "micron")):
        return 1.0
    return 1e-3 if value > 100 else 1.0   # no unit: 665 is nanometres, 0.665 micrometres


def wavelength_um(band) -> Optional[float]:
    """The band's central wavelength in micrometres, if its metadata or description tell."""
    imagery = band.GetMetadata("IMAGERY") or {}
    if "CENTRAL_WAVELENGTH_UM" in imagery:
        try:
            return float(imagery["CENTRAL_WAVELENGTH_UM"])
        except ValueError:
            pass
    md = {k.lower(): v for k, v in (band.GetMetadata() or {}).items()}
    if "central_wavelength_um" in md:
        try:
            return float(md["central_wavelength_um"])
        except ValueError:
            pass
    if "wavelength" in md:
        try:
            value = float(md["wavelength"])
            unit = md.get("wavelength_unit") or md.get("wavelength_units") or ""
            return value * _unit_scale(unit, value)
        except ValueError:
            pass
    text = band.GetDescription() or ""
    match = re.search(r"(\d+(?:\.\d+)?)\s*(nm|µm|um|micrometers?|nanometers?)\b", text, re.IGNORECASE)
    if match:
        value = float(match.group(1))
        return value * _unit_scale(match.group(2), value)
    match = re.search(r"\((0\.\d+|[12]\.\d+)\)", text)      # ENVI's "Band 1 (0.4850)"
    if match and 0.3 < float(match.group(1)) < 2.6:
        return float(match.group(1))
    return None


def _by_wavelength(ds, candidates: Sequence[int]) -> Optional[List[int]]:
    waves = {i: wavelength_um(ds.GetRasterBand(i)) for i in candidates}
    chosen = []
    for colour in COLOURS:
        lo, hi = WAVELENGTH_RANGES[colour]
        inside = [(abs(w - WAVELENGTH_CENTRES[colour]), i) for i, w in waves.items() if w is not None and lo <= w < hi]
        if not inside:
            return None
        chosen.append(min(inside)[1])
    return chosen if len(set(chosen)) == 3 else None


_EXCLUDED_WORDS = re.compile(r"\b(edge|nir|near|infra-?red|swir|coastal|aerosol|cirrus|thermal)\b", re.IGNORECASE)


def _by_name(texts: Dict[int, str]) -> Optional[List[int]]:
    chosen = []
    for colour in COLOURS:
        exact, loose = [], []
        for i, text in texts.items():
            t = text.strip().lower()
            if t in (colour, colour[0]):
                exact.append(i)
            elif re.search(rf"\b{colour}\b", t) and not _EXCLUDED_WORDS.search(t):
                loose.append(i)
        found = exact or loose
        if not found:
            return None
        chosen.append(found[0])
    return chosen if len(set(chosen)) == 3 else None


_CODE = re.compile(r"(?:^|[^a-z0-9])(?:sr_|toa_|st_)?b(\d{1,2}a?)(?![a-z0-9])", re.IGNORECASE)


def _codes(texts: Dict[int, str]) -> Dict[int, str]:
    """Band index -> sensor band code ('4', '8a', '11'; zero padding dropped) from B4/B04/SR_B4 names."""
    out = {}
    for i, text in texts.items():
        match = _CODE.search(text)
        if match:
            out[i] = match.group(1).lower().lstrip("0") or "0"
    return out


def _sensor(ds, path, texts: Dict[int, str], codes: Dict[int, str]) -> Optional[str]:
    """Which sensor the band codes belong to, from metadata, the file name, or the code set itself."""
    md = " ".join(f"{k}={v}" for k, v in (ds.GetMetadata() or {}).items()).upper()
    name = Path(str(path)).name.upper()
    if re.search(r"LANDSAT[_ ]?[89]\b|\bOLI\b|OLI_TIRS", md) or re.match(r"^L[COT]0?[89]_", name):
        return "landsat-oli"
    if re.search(r"LANDSAT[_ ]?[4-7]\b|\bETM\+?|\bTM\b", md) or re.match(r"^L[TEM]0?[4-7]_", name):
        return "landsat-tm"
    if re.search(r"SENTINEL[-_ ]?2|\bMSI\b|\bS2[ABC]\b", md) or re.match(r"^(S2[ABC]_|T\d{2}[A-Z]{3}_)", name):
        return "sentinel-2"
    raw = " ".join(texts.values()).upper()
    values = set(codes.values())
    if "8a" in values or "12" in values or re.search(r"\bB0\d\b", raw):
        return "sentinel-2"
    if "10" in values or "11" in values or re.search(r"SR_B6\b", raw):
        return "landsat-oli"         # TIRS bands 10-11; Collection 2 SR_B6 exists on OLI only
    if re.search(r"SR_B7\b", raw) or re.search(r"ST_B6\b", raw):
        return "landsat-tm"          # TM/ETM+ Collection 2: SR_B1-5, SR_B7 and thermal ST_B6
    return None


def _by_code(ds, path, texts: Dict[int, str]):
    codes = _codes(texts)
    sensor = _sensor(ds, path, texts, codes) if codes else None
    if sensor is None:
        return None, None
    by_code = {}
    for i, code in codes.items():
        by_code.setdefault(code, i)
    chosen = [by_code.get(code) for code in SENSOR_CODES[sensor]]
    return (chosen, sensor) if all(chosen) and len(set(chosen)) == 3 else (None, None)


def choose(ds, bands: Optional[Sequence[int]] = None, path="raster") -> BandChoice:
    """The bands to show as R, G, B (one band means grey or palette colours). Explicit `bands` win."""
    count = ds.RasterCount

    def names(chosen):
        return [ds.GetRasterBand(i).GetDescription() or "" for i in chosen]

    if bands:
        bands = [int(b) for b in bands]
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise _fail(path, f"has no band {bad[0]} (it has {count})", f"Choose bands between 1 and {count}.")
        if len(bands) not in (1, 3):
            raise _fail(path, f"{len(bands)} bands were asked for",
                        "Give one band (shown as grey) or three (red, green, blue).")
        palette = len(bands) == 1 and ds.GetRasterBand(bands[0]).GetColorTable() is not None
        return BandChoice(bands, "the bands asked for", names(bands), palette)
    interp = {ds.GetRasterBand(i).GetColorInterpretation(): i for i in range(count, 0, -1)}
    rgb = [interp.get(c) for c in (gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand)]
    if all(rgb):
        return BandChoice(rgb, "the colour interpretation", names(rgb))
    # An alpha band is validity, not colour.
    data = [i for i in range(1, count + 1) if ds.GetRasterBand(i).GetColorInterpretation() != gdal.GCI_AlphaBand]
    if len(data) < 3:
        first = data[:1] or [1]
        palette = ds.GetRasterBand(first[0]).GetColorTable() is not None
        reason = ("its colour table" if palette else "the only band" if len(data) == 1
                  else "the first band (two bands: one is shown as grey)")
        return BandChoice(first, reason, names(first), palette)
    found = _by_wavelength(ds, data)
    if found:
        waves = [wavelength_um(ds.GetRasterBand(i)) for i in found]
        return BandChoice(found, "the band wavelengths (" + ", ".join(f"{w * 1000:.0f} nm" for w in waves) + ")",
                          names(found))
    texts = {i: _band_text(ds.GetRasterBand(i)) for i in data}
    found = _by_name(texts)
    if found:
        return BandChoice(found, "the band names", names(found))
    found, sensor = _by_code(ds, path, texts)
    if found:
        return BandChoice(found, f"the band names as {SENSOR_NAMES[sensor]} band numbers", names(found))
    return BandChoice(data[:3], "band order (no colour, wavelength or name says which band is red, green, "
                      "blue: choose bands to change it)", names(data[:3]))


def choose_bands(ds, bands: Optional[Sequence[int]] = None, path="raster") -> List[int]:
    """1-based bands to show as R, G, B (one band means grey). Explicit `bands` wins."""
    return choose(ds, bands, path).bands


def palette_lut(band) -> np.ndarray:
    """(entries, 4) uint8 RGBA of a band's colour table, as QGIS shows it (alpha 0 = transparent)."""
    table = band.GetColorTable()
    n = table.GetCount()
    entries = np.array([table.GetColorEntry(i) for i in range(n)], dtype=np.int32).reshape(n, 4)
    kind = table.GetPaletteInterpretation()
    if kind == gdal.GPI_Gray:
        entries = np.stack([entries[:, 0]] * 3 + [np.full(n, 255)], axis=1)
    elif kind == gdal.GPI_CMYK:
        k = entries[:, 3:4]
        rgb = (255 - entries[:, :3]) * (255 - k) // 255
        entries = np.concatenate([rgb, np.full((n, 1), 255)], axis=1)
    return np.clip(entries, 0, 255).astype(np.uint8)
