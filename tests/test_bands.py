"""Which bands are red, green, blue: wavelengths, names and sensor band numbers on real GeoTIFFs."""

import numpy as np
import pytest
from osgeo import gdal

from rs_vqa_plugin.engine.bands import choose, wavelength_um
from rs_vqa_plugin.engine.raster import RasterSource, describe
from tests.rasters import texture, write_geotiff

gdal.UseExceptions()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _stack(path, descriptions=None, metadata=None, imagery=None, dataset_metadata=None, count=None):
    """A UInt16 multi-band GeoTIFF, each band its own pattern (so bands are told apart)."""
    count = count or len(descriptions or metadata or imagery)
    data = np.concatenate([(texture(32, 32, seed=i, bands=1) * 3000).astype(np.uint16) for i in range(count)])
    path = write_geotiff(path, data)
    ds = gdal.Open(str(path), gdal.GA_Update)
    for i in range(count):
        band = ds.GetRasterBand(i + 1)
        if descriptions:
            band.SetDescription(descriptions[i])
        if metadata and metadata[i]:
            band.SetMetadata(metadata[i])
        if imagery and imagery[i]:
            band.SetMetadata(imagery[i], "IMAGERY")
    if dataset_metadata:
        ds.SetMetadata(dataset_metadata)
    ds = None
    return path


def _choice(path):
    ds = gdal.Open(str(path))
    return choose(ds, None, path)


LANDSAT8 = ["Coastal aerosol", "Blue", "Green", "Red", "NIR", "SWIR 1", "SWIR 2"]
LANDSAT5 = ["Blue", "Green", "Red", "Near infrared", "SWIR 1", "Thermal", "SWIR 2"]


@pytest.mark.parametrize("names,expected", [
    (LANDSAT5, [3, 2, 1]),                                   # Landsat 4-7: bands 1, 2, 3 are blue, green, red
    (LANDSAT8, [4, 3, 2]),
    (["Coastal Blue", "Blue", "Green I", "Green", "Yellow", "Red", "Red Edge", "NIR"], [6, 4, 2]),  # SuperDove
    (["nir", "red edge 1", "red", "green", "blue"], [3, 4, 5]),
    (["Band 4 - Red", "Band 3 - Green", "Band 2 - Blue", "Band 5 - NIR"], [1, 2, 3]),
    (["R", "G", "B", "NIR"], [1, 2, 3]),
])
def test_band_names_say_which_band_is_which(tmp_path, names, expected):
    choice = _choice(_stack(tmp_path / "s.tif", descriptions=names))
    assert choice.bands == expected and choice.reason == "the band names"


def test_wavelengths_win_and_coastal_loses_to_blue(tmp_path):
    # Landsat 8 OLI central wavelengths (micrometres) in GDAL's IMAGERY domain, no names at all.
    waves = [0.443, 0.482, 0.561, 0.655, 0.865, 1.609, 2.201]
    path = _stack(tmp_path / "l8.tif", imagery=[{"CENTRAL_WAVELENGTH_UM": str(w)} for w in waves])
    choice = _choice(path)
    assert choice.bands == [4, 3, 2] and "655 nm, 561 nm, 482 nm" in choice.reason


@pytest.mark.parametrize("items", [
    lambda w: {"WAVELENGTH": str(round(w * 1000)), "WAVELENGTH_UNIT": "nm"},          # SENTINEL2 driver
    lambda w: {"wavelength": f"{w:.4f}", "wavelength_units": "Micrometers"},          # ENVI
    lambda w: {"wavelength": str(round(w * 1000))},                                    # no unit: nm by size
])
def test_wavelength_metadata_of_other_drivers(tmp_path, items):
    waves = [0.49, 0.56, 0.665, 0.842]                        # Sentinel-2 B2, B3, B4, B8
    path = _stack(tmp_path / "s2.tif", metadata=[items(w) for w in waves])
    assert _choice(path).bands == [3, 2, 1]


def test_wavelength_in_a_description(tmp_path):
    names = ["B2, central wavelength 490 nm", "B3, central wavelength 560 nm",
             "B4, central wavelength 665 nm", "B8, central wavelength 842 nm"]
    path = _stack(tmp_path / "s2.tif", descriptions=names)
    assert _choice(path).bands == [3, 2, 1]
    ds = gdal.Open(str(path))
    assert wavelength_um(ds.GetRasterBand(3)) == pytest.approx(0.665)


@pytest.mark.parametrize("name,codes,dataset_metadata,expected,sensor", [
    ("s2.tif", ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"], None, [4, 3, 2], "Sentinel-2"),
    ("s2.tif", ["B02", "B03", "B04", "B08"], None, [3, 2, 1], "Sentinel-2"),
    ("l8.tif", ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"], None, [4, 3, 2], "Landsat 8-9"),
    ("l5.tif", ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7"], None, [3, 2, 1], "Landsat 4-7"),
    ("LT05_L1TP_017039_20100101.tif", ["B1", "B2", "B3", "B4", "B5", "B6", "B7"], None, [3, 2, 1], "Landsat 4-7"),
    ("LC08_L1TP_017039_20200101.tif", ["B1", "B2", "B3", "B4", "B5", "B6", "B7"], None, [4, 3, 2], "Landsat 8-9"),
    ("stack.tif", ["B1", "B2", "B3", "B4", "B5", "B6", "B7"], {"SPACECRAFT_ID": "LANDSAT_7"}, [3, 2, 1], "Landsat 4-7"),
])
def test_sensor_band_numbers_when_the_sensor_is_known(tmp_path, name, codes, dataset_metadata, expected, sensor):
    choice = _choice(_stack(tmp_path / name, descriptions=codes, dataset_metadata=dataset_metadata))
    assert choice.bands == expected and sensor in choice.reason


@pytest.mark.parametrize("names", [
    ["B1", "B2", "B3", "B4", "B5", "B6", "B7"],      # Landsat 5 or 8? nothing says: no guess
    ["Band 1", "Band 2", "Band 3", "Band 4"],          # generic names
    ["", "", "", ""],
])
def test_no_guess_without_evidence(tmp_path, names):
    choice = _choice(_stack(tmp_path / "x.tif", descriptions=names))
    assert choice.bands == [1, 2, 3] and choice.reason.startswith("band order")


def test_the_choice_reaches_the_reader_and_describe(tmp_path):
    path = _stack(tmp_path / "l5.tif", descriptions=LANDSAT5)
    events = []
    with RasterSource(path, events=events.append) as src:
        rgb, _ = src.read(0, 0, 32, 32, 32, 32)
        assert src.bands == [3, 2, 1] and src.band_choice.to_dict() == {
            "bands": [3, 2, 1], "shown_as": "R, G, B", "from": "the band names", "names": ["Red", "Green", "Blue"]}
    # The red channel holds band 3's pattern, the blue channel band 1's.
    ds = gdal.Open(str(path))
    for channel, band in ((0, 3), (2, 1)):
        pattern = ds.GetRasterBand(band).ReadAsArray().ravel()
        assert np.corrcoef(rgb[..., channel].ravel(), pattern)[0, 1] > 0.98
    assert any("bands 3, 2, 1 (Red, Green, Blue) as R, G, B, from the band names" in e["message"] for e in events)
    info = describe(path)
    assert info["rgb_bands"] == [3, 2, 1] and info["rgb_bands_from"] == "the band names"


def test_colour_interpretation_still_comes_first(tmp_path):
    path = _stack(tmp_path / "ci.tif", descriptions=LANDSAT5)
    ds = gdal.Open(str(path), gdal.GA_Update)
    for i, ci in enumerate((gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand)):
        ds.GetRasterBand(i + 1).SetColorInterpretation(ci)
    ds = None
    choice = _choice(path)
    assert choice.bands == [1, 2, 3] and choice.reason == "the colour interpretation"
