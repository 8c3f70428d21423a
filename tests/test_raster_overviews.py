"""Overviews: reuse, build beside the file or in the cache, read-only folders, cancel leaves nothing."""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from osgeo import gdal

from rs_vqa_plugin.engine.errors import Cancelled
from rs_vqa_plugin.engine.overviews import (build_overviews, cached_vrt, default_cache_dir,
                                            inspect_overviews, needed_factors)
from rs_vqa_plugin.engine.progress import CancelToken
from tests.rasters import make_rgb_scene

gdal.UseExceptions()
REPO = Path(__file__).resolve().parent.parent


def _sha(path):
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _scene(folder, name="scene.tif", size=2100):
    folder.mkdir(parents=True, exist_ok=True)
    return make_rgb_scene(folder / name, size=size, seed=5)


def test_needed_factors_reach_about_256_px():
    assert needed_factors(27328, 27328) == [2, 4, 8, 16, 32, 64, 128]
    assert needed_factors(2100, 900) == [2, 4, 8, 16]
    assert needed_factors(300, 300) == [2]


def test_build_beside_the_file_never_touches_it(tmp_path):
    path = _scene(tmp_path / "in")
    digest, mtime = _sha(path), path.stat().st_mtime_ns
    events = []
    state = build_overviews(path, cache_dir=tmp_path / "cache", events=events.append)
    assert (state.location, state.built, state.read_path) == ("external", True, path)
    assert state.factors == [2, 4, 8, 16]
    assert sorted(os.listdir(path.parent)) == ["scene.tif", "scene.tif.ovr"]   # no temp files left
    assert (_sha(path), path.stat().st_mtime_ns) == (digest, mtime)
    fractions = [e["fraction"] for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 3
    assert {e["stage"] for e in events} == {"overviews"}
    ds = gdal.Open(str(path))
    assert ds.GetRasterBand(1).GetOverviewCount() == 4
    # Second call reuses what is there.
    again = build_overviews(path, cache_dir=tmp_path / "cache")
    assert (again.location, again.built) == ("external", False)
    assert not (tmp_path / "cache").exists()


def test_internal_overviews_are_used_as_they_are(tmp_path):
    path = _scene(tmp_path / "in")
    ds = gdal.Open(str(path), gdal.GA_Update)
    ds.BuildOverviews("AVERAGE", [2, 4, 8, 16])
    ds = None
    digest = _sha(path)
    state = build_overviews(path, cache_dir=tmp_path / "cache")
    assert (state.location, state.built) == ("internal", False)
    assert os.listdir(path.parent) == ["scene.tif"] and _sha(path) == digest


def test_partial_internal_overviews_are_completed_in_the_cache(tmp_path):
    path = _scene(tmp_path / "in")
    ds = gdal.Open(str(path), gdal.GA_Update)
    ds.BuildOverviews("AVERAGE", [2])
    ds = None
    digest = _sha(path)
    state = build_overviews(path, cache_dir=tmp_path / "cache")
    assert state.location == "cache" and state.read_path == cached_vrt(path, tmp_path / "cache")
    assert os.listdir(path.parent) == ["scene.tif"] and _sha(path) == digest
    vrt = gdal.Open(str(state.read_path))
    assert vrt.GetRasterBand(1).GetOverviewCount() == 4


def test_cache_on_request_and_reuse(tmp_path):
    path = _scene(tmp_path / "in")
    cache = tmp_path / "cache"
    state = build_overviews(path, cache_dir=cache, use_cache=True)
    assert state.location == "cache" and os.listdir(path.parent) == ["scene.tif"]
    names = sorted(os.listdir(cache))
    assert names == [state.read_path.name, state.read_path.name + ".ovr"]
    assert inspect_overviews(path, cache).location == "cache"
    # A modified file gets a new cache entry (the key holds size and time).
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert inspect_overviews(path, cache).location == "none"


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RS_VQA_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "overviews"
    monkeypatch.delenv("RS_VQA_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "rs-vqa" / "overviews"


@pytest.mark.parametrize("use_cache", [False, True])
def test_cancel_leaves_no_partial_file(tmp_path, use_cache):
    path = _scene(tmp_path / "in")
    cache = tmp_path / "cache"
    token = CancelToken()

    def on_event(event):
        if event["fraction"] > 0.2:
            token.cancel()

    with pytest.raises(Cancelled):
        build_overviews(path, cache_dir=cache, use_cache=use_cache, events=on_event, cancel=token)
    assert os.listdir(path.parent) == ["scene.tif"]
    assert not cache.exists() or os.listdir(cache) == []
    assert inspect_overviews(path, cache).location == "none"


def test_read_only_folder_falls_back_to_the_cache():
    """A folder the user cannot write: as root (CI containers) run the build as `nobody`."""
    base = Path(tempfile.mkdtemp(prefix="rs-vqa-ro-"))
    try:
        os.chmod(base, 0o755)
        folder, cache = base / "readonly", base / "cache"
        path = _scene(folder)
        cache.mkdir()
        os.chmod(cache, 0o777)
        os.chmod(folder, 0o555)
        os.chmod(path, 0o444)
        code = ("import json, sys; from rs_vqa_plugin.engine.overviews import build_overviews; "
                "s = build_overviews(sys.argv[1], cache_dir=sys.argv[2]); print(json.dumps(s.to_dict()))")
        kwargs = {}
        if os.geteuid() == 0:
            kwargs = dict(user=65534, group=65534, extra_groups=[])
        result = subprocess.run([sys.executable, "-c", code, str(path), str(cache)], cwd=REPO,
                                capture_output=True, text=True, timeout=120,
                                env={**os.environ, "HOME": str(cache)}, **kwargs)
        assert result.returncode == 0, result.stderr
        import json
        state = json.loads(result.stdout.strip().splitlines()[-1])
        assert state["location"] == "cache" and "not writable" in state["note"]
        assert os.listdir(folder) == ["scene.tif"]
        assert sorted(p.suffix for p in cache.iterdir()) == [".ovr", ".vrt"]
    finally:
        os.chmod(base / "readonly", 0o755)
        shutil.rmtree(base)


def test_raster_inside_a_zip_gets_cached_overviews(tmp_path):
    import zipfile

    path = _scene(tmp_path / "in")
    archive = tmp_path / "scene.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(path, "scene.tif")
    virtual = f"/vsizip/{archive}/scene.tif"
    state = build_overviews(virtual, cache_dir=tmp_path / "cache")
    assert state.location == "cache" and state.built
    assert build_overviews(virtual, cache_dir=tmp_path / "cache").built is False
    from rs_vqa_plugin.engine.raster import RasterSource

    with RasterSource(virtual, overview_cache_dir=tmp_path / "cache") as src:
        assert src.overviews.read_path == state.read_path
        rgb, valid = src.read(0, 0, 2100, 2100, 300, 300)
    assert valid.all() and rgb.std() > 10
