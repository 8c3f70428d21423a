"""Overviews: reuse, build beside the file or in the cache, read-only folders, cancel leaves nothing."""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
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


def test_the_build_caps_gdal_block_cache_and_restores_it(tmp_path, monkeypatch):
    # GDAL's default cache (5 % of RAM) filled with blocks read once made a 27k build peak at
    # 1.46 GB; the build runs under the engine's cap and leaves the process's setting as it was.
    from rs_vqa_plugin.engine.overviews import OVERVIEW_BLOCK_CACHE_MB

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    before = gdal.GetCacheMax()
    gdal.SetCacheMax(1024 * 2**20)
    try:
        seen = []
        build_overviews(_scene(tmp_path), cache_dir=tmp_path / "cache", use_cache=True,
                        events=lambda e: seen.append(gdal.GetCacheMax()))
        assert seen and set(seen[:-1]) == {OVERVIEW_BLOCK_CACHE_MB * 2**20}   # the last: "ready"
        assert gdal.GetCacheMax() == 1024 * 2**20
    finally:
        gdal.SetCacheMax(before)


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


@pytest.mark.subprocess
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


# -- stale, foreign and broken overview files; a killed build's leftovers --------------------

def _thumb(path, cache, **kwargs):
    """What the reader sees: the whole raster at 300 px, through whatever overviews are chosen."""
    from rs_vqa_plugin.engine.raster import RasterSource

    with RasterSource(path, overview_cache_dir=cache, **kwargs) as src:
        rgb, _ = src.read(0, 0, src.width, src.height, 300, 300)
        return rgb.astype(int), src.overviews


def _fresh(path, tmp_path):
    """The same raster read with overviews freshly built in an empty folder: the expected pixels."""
    folder = tmp_path / "fresh"
    folder.mkdir(exist_ok=True)
    copy = folder / path.name
    shutil.copy(path, copy)
    return _thumb(copy, tmp_path / "fresh-cache")[0]


def _replace(path, seed, keep_time):
    """Put another scene of the same size under the same name (keeping size and time if asked)."""
    st = path.stat()
    other = make_rgb_scene(path.parent / "other.tif", size=2100, seed=seed,
                           compress="NONE" if keep_time else "DEFLATE")
    os.replace(other, path)
    if keep_time:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("keep_time", [False, True])
def test_our_ovr_is_rebuilt_when_the_raster_is_replaced(tmp_path, keep_time):
    folder = tmp_path / "in"
    folder.mkdir()
    path = make_rgb_scene(folder / "scene.tif", size=2100, seed=5, compress="NONE" if keep_time else "DEFLATE")
    _thumb(path, tmp_path / "cache")
    assert (folder / "scene.tif.ovr").is_file()
    _replace(path, seed=6, keep_time=keep_time)
    got, state = _thumb(path, tmp_path / "cache")
    assert state.location == "external" and state.built and "scene.tif.ovr" in state.note and "rebuilt" in state.note
    np.testing.assert_array_equal(got, _fresh(path, tmp_path))
    assert sorted(os.listdir(folder)) == ["scene.tif", "scene.tif.ovr"]
    # Once rebuilt it is trusted again: no rebuild on the next run.
    assert _thumb(path, tmp_path / "cache")[1].built is False


def test_cache_entry_is_rebuilt_when_replaced_with_the_same_size_and_time(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    path = make_rgb_scene(folder / "scene.tif", size=2100, seed=5, compress="NONE")
    first = _thumb(path, tmp_path / "cache", use_cache=True)[1]
    _replace(path, seed=6, keep_time=True)            # unzip, cp -p: the cache key is the same
    got, state = _thumb(path, tmp_path / "cache", use_cache=True)
    assert state.read_path == first.read_path and state.built and "rebuilt" in state.note
    np.testing.assert_array_equal(got, _fresh(path, tmp_path))


def test_foreign_overviews_are_used_when_they_match_and_ignored_when_not(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    path = make_rgb_scene(folder / "scene.tif", size=2100, seed=5)
    for method in ("NEAREST", "AVERAGE"):      # gdaladdo's default and QGIS's usual choice
        ds = gdal.Open(str(path))               # read-only: GDAL writes scene.tif.ovr
        ds.BuildOverviews(method, [2, 4, 8, 16])
        ds = None
        state = inspect_overviews(path, tmp_path / "cache")
        assert (state.location, state.ignored) == ("external", None), method
        os.unlink(str(path) + ".ovr")
    ds = gdal.Open(str(path))
    ds.BuildOverviews("AVERAGE", [2, 4, 8, 16])
    ds = None
    ovr = Path(str(path) + ".ovr")
    digest = _sha(ovr)
    _replace(path, seed=6, keep_time=False)
    got, state = _thumb(path, tmp_path / "cache")
    assert state.location == "cache" and state.ignored == ovr
    assert str(ovr) in state.note and "another raster" in state.note and "delete scene.tif.ovr" in state.note
    np.testing.assert_array_equal(got, _fresh(path, tmp_path))
    assert _sha(ovr) == digest and sorted(os.listdir(folder)) == ["scene.tif", "scene.tif.ovr"]  # not ours: untouched
    # Without building (inspect only) the bad file is hidden from the reads too.
    got, state = _thumb(path, tmp_path / "other-cache", build_overviews=False)
    assert state.ignored == ovr and state.open_options


@pytest.mark.parametrize("size", [2100, 600])
def test_truncated_ovr_is_blamed_on_the_ovr_and_never_read(tmp_path, size):
    folder = tmp_path / "in"
    folder.mkdir()
    path = make_rgb_scene(folder / "scene.tif", size=size, seed=5)
    ds = gdal.Open(str(path))
    ds.BuildOverviews("AVERAGE", [2, 4])
    ds = None
    ovr = Path(str(path) + ".ovr")
    ovr.write_bytes(ovr.read_bytes()[: ovr.stat().st_size // 2])
    events = []
    from rs_vqa_plugin.engine.raster import RasterSource

    with RasterSource(path, overview_cache_dir=tmp_path / "cache", events=events.append) as src:
        rgb, valid = src.read(0, 0, size, size, 300, 300)
        state = src.overviews
    assert valid.all() and rgb.std() > 10
    assert state.ignored == ovr and "truncated or corrupt" in state.note and str(ovr) in state.note
    assert "delete scene.tif.ovr" in state.note or size < 1024       # small: no cache needed, just hidden
    assert any(str(ovr) in e["message"] for e in events)
    assert ovr.stat().st_size > 0                                     # not ours to delete


def test_the_overviews_command_reports_a_truncated_ovr(tmp_path, capsys):
    from rs_vqa_plugin.commands import main

    path = make_rgb_scene(tmp_path / "scene.tif", size=2100, seed=5)
    ds = gdal.Open(str(path))
    ds.BuildOverviews("AVERAGE", [2, 4])
    ds = None
    ovr = Path(str(path) + ".ovr")
    ovr.write_bytes(ovr.read_bytes()[:5000])
    assert main(["overviews", str(path), "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "scene.tif.ovr is truncated or corrupt" in out and "delete scene.tif.ovr" in out


_HOLD = """
import sys, time
from pathlib import Path
from rs_vqa_plugin.engine.overview_temp import TempBuild
temp = TempBuild(Path(sys.argv[1]), sys.argv[2])
temp.vrt.write_text("<VRTDataset/>")
temp.ovr.write_bytes(b"x" * 1_000_000)
print(temp.lock, flush=True)
time.sleep(600)
"""


def _hold_temp_build(folder, stem):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), stem], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    lock = Path(proc.stdout.readline().strip())
    assert lock.is_file()
    return proc, lock


@pytest.mark.subprocess
def test_a_killed_build_leaves_nothing_after_the_next_run(tmp_path):
    import signal

    folder = tmp_path / "in"
    path = _scene(folder)
    cache = tmp_path / "cache"
    cache.mkdir()
    dead, dead_lock = _hold_temp_build(folder, "scene.tif")
    live, live_lock = _hold_temp_build(folder, "scene.tif")          # another build, still running
    dead_cache, _ = _hold_temp_build(cache, "scene-0123456789abcdef")
    try:
        for proc in (dead, dead_cache):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        # What earlier versions left (no lock): removed once idle for a while, never while fresh.
        old = time.time() - 3600
        legacy = [folder / ".scene.tif.ab12cd34.rs-vqa.vrt", folder / ".scene.tif.ab12cd34.rs-vqa.vrt.ovr",
                  cache / ".scene-0123456789abcdef.zz99yy88.vrt.ovr"]
        fresh_legacy = folder / ".scene.tif.ef56gh78.rs-vqa.vrt.ovr"
        keep = [folder / ".scene.tif.notes", folder / ".other.tif.ab12cd34.rs-vqa.vrt", folder / "keep.vrt.ovr"]
        for f in legacy + [fresh_legacy] + keep:
            f.write_bytes(b"x" * 1000)
        for f in legacy + keep:
            os.utime(f, (old, old))
        state = build_overviews(path, cache_dir=cache)
        assert state.location == "external" and state.built
        hidden = sorted(f for f in os.listdir(folder) if f.startswith("."))
        live_base = live_lock.name[:-len(".lock")]
        assert hidden == sorted([live_lock.name, live_base + ".vrt", live_base + ".vrt.ovr",
                                 fresh_legacy.name, ".scene.tif.notes", ".other.tif.ab12cd34.rs-vqa.vrt"])
        assert not dead_lock.exists() and all(not f.exists() for f in legacy[:2]) and all(f.exists() for f in keep)
        # The cache folder is cleaned when a build goes there.
        build_overviews(_scene(tmp_path / "in2"), cache_dir=cache, use_cache=True)
        assert sorted(p.suffix for p in cache.iterdir()) == [".ovr", ".vrt"]
    finally:
        live.kill()
        live.wait()
