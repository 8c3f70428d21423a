"""Heat layers on the QGIS side, for the chat dock and Processing alike: the fields (the engine's
HEAT_FIELDS), the CRS rule, the rows, the GeoPackage the dock writes, the style (classes labelled
by share of the model's attention) and the per-raster group the layers are shown in."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Optional

from qgis.core import (QgsCoordinateReferenceSystem, QgsField, QgsFields, QgsLayerTreeGroup,
                       QgsProject, QgsVectorLayer)
from qgis.PyQt.QtCore import QCoreApplication, QVariant

from .engine import HEAT_FIELDS, heat_cell_from_dict, heat_values
from .paths import resources_dir
from .settings import plugin_data_dir

STYLE_FILE = "heatmap.qml"
GROUP_PREFIX = "RS-VQA: "
MAX_NAME = 60
HEAT_PROPERTY = "rs_vqa/heatmap"


def tr(text: str) -> str:
    return QCoreApplication.translate("HeatLayer", text)


def heatmap_folder(project: QgsProject) -> Path:
    """Next to the saved project (so it travels with it), else in the plugin's data folder."""
    if project.fileName():
        folder = Path(project.absolutePath()) / "rs_vqa_heatmaps"
    else:
        folder = unsaved_heatmap_folder()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def unsaved_heatmap_folder() -> Path:
    """Where the heatmaps of a project never saved go, until its first save moves them."""
    return plugin_data_dir() / "heatmaps"


def heatmap_gpkg(project: QgsProject, raster_name: str, folder: Optional[Path] = None) -> Path:
    """The one GeoPackage a project's heatmaps go to, a layer per question: named after the
    project, or after the raster while the project has never been saved."""
    name = Path(project.fileName()).stem if project.fileName() else raster_name
    return (folder or heatmap_folder(project)) / f"{_safe_name(name, 40) or 'heatmaps'}.gpkg"


def heat_layers(project: QgsProject) -> list:
    return [layer for layer in project.mapLayers().values()
            if layer.customProperty(HEAT_PROPERTY, False)]


def layer_name_for(question: str) -> str:
    name = " ".join(question.split())
    return name if len(name) <= MAX_NAME else name[:MAX_NAME - 1] + "…"


def _safe_name(text: str, length: int) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:length]


def heat_layer_base(question: str) -> str:
    """The GeoPackage layer name a question's heatmap starts from (then _2, _3, ... when taken)."""
    return "heat_" + (_safe_name(question.lower(), 40).strip("_-") or "answer")


def _stamped(path: Path) -> Path:
    """A file name beside `path` no other heatmap has: for a GeoPackage that cannot be written."""
    stamp = f"{time.strftime('%Y%m%d_%H%M%S')}_{int(time.time() * 1000) % 1000:03d}"
    return path.with_name(f"{path.stem}_{stamp}{path.suffix}")


FIELD_TYPES = {"string": QVariant.String, "real": QVariant.Double, "integer": QVariant.Int}


def heat_fields(leading=()) -> QgsFields:
    """The heat layer's fields: `leading` (name, kind) pairs, then the engine's HEAT_FIELDS."""
    fields = QgsFields()
    for name, kind in (*leading, *HEAT_FIELDS):
        fields.append(QgsField(name, FIELD_TYPES[kind]))
    return fields


def heat_rows(question: str, cells, leading=()) -> list:
    """(values in heat_fields() order, polygon ring) per heat cell (HeatCell or its dict)."""
    cells = [heat_cell_from_dict(c) if isinstance(c, dict) else c for c in cells or []]
    return [([*leading, *heat_values(question, cell)], cell.ring) for cell in cells]


def heat_crs(raster_layer, crs_wkt: str = "") -> QgsCoordinateReferenceSystem:
    """The CRS of a raster's heat cells: the raster layer's, as QGIS shows it (the cells are in
    its pixel grid's coordinates, so they overlay it whatever CRS the layer was given), else the
    CRS the engine read from the file."""
    crs = raster_layer.crs() if raster_layer is not None else QgsCoordinateReferenceSystem()
    return crs if crs.isValid() else QgsCoordinateReferenceSystem.fromWkt(crs_wkt or "")


def write_heat_gpkg(answer: dict, crs: QgsCoordinateReferenceSystem, path: Path) -> tuple:
    """Write the cells as a new layer of the GeoPackage `path` (a new file written under a
    temporary name; a layer added to an existing one in one transaction, under a name no other
    layer has): a failed write leaves nothing half-written. A GeoPackage that cannot take the layer
    (locked by another program, read-only, damaged) is said in the note, and the layer goes to a
    new file beside it. Returns (file, layer name, note or "")."""
    from .engine import Answer, RsVqaError, write_heatmap_layer

    question = answer.get("question", "")
    cells = [heat_cell_from_dict(c) if isinstance(c, dict) else c for c in answer.get("heat_cells") or []]
    # The CRS QGIS shows the raster in (heat_crs), not only the one the engine read.
    answers = [Answer(question=question, text="", mode="", heat_cells=cells,
                      crs_wkt=crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL))]
    base, note = heat_layer_base(question), ""
    try:
        target = write_heatmap_layer(answers, path, base=base)
    except (RsVqaError, RuntimeError, OSError) as exc:
        if not path.exists():
            raise OSError(tr("Cannot write the heatmap {path}: {error}").format(path=path, error=exc)) from exc
        fallback = _stamped(path)
        try:
            target = write_heatmap_layer(answers, fallback, base=base)
        except (RsVqaError, RuntimeError, OSError) as again:
            raise OSError(tr("Cannot write the heatmap {path}: {error}").format(
                path=fallback, error=again)) from again
        note = tr("The heatmap GeoPackage {path} could not take another layer ({error}); this "
                  "heatmap was written to {fallback} instead.").format(path=path, error=exc,
                                                                       fallback=fallback)
    return target.path, target.layer, note


def raster_group(project: QgsProject, raster_layer, raster_name: str = "") -> QgsLayerTreeGroup:
    """The raster's "RS-VQA: <name>" group, made above the raster the first time. A raster that
    is not in the project (a file given to Processing) has its group, named `raster_name`, made
    at the top of the layer tree."""
    root = project.layerTreeRoot()
    name = GROUP_PREFIX + (raster_layer.name() if raster_layer is not None else raster_name)
    group = root.findGroup(name)
    if group is None:
        # Above the raster so the heat cells draw over it.
        raster_node = root.findLayer(raster_layer.id()) if raster_layer is not None else None
        parent = raster_node.parent() if raster_node is not None else root
        index = parent.children().index(raster_node) if raster_node is not None else 0
        group = parent.insertGroup(index, name)
    return group


def raster_file_name(source: str) -> str:
    """The name QGIS gives a raster layer opened from `source` (its file's base name), for the
    group of a raster given as a file."""
    return Path(source.split("|")[0]).stem or source


def focus_subset(layer: QgsVectorLayer) -> str:
    """Show the finest level's kept tokens (else its selected tiles): scores are normalised per
    level, so coarse tiles drawn under fine tokens would swamp them. The file keeps every cell;
    clearing the layer's filter shows them all."""
    for kind in ("token", "tile"):
        levels = [f["level"] for f in layer.getFeatures(f"\"kind\" = '{kind}'")]
        if levels:
            return f"\"kind\" = '{kind}' AND \"level\" = {max(levels)}"
    return ""


LAYER_TITLE = "Where the model looked: share of its attention per cell"


def style_heat_layer(layer: QgsVectorLayer) -> None:
    layer.setSubsetString(focus_subset(layer))
    layer.loadNamedStyle(str(resources_dir() / STYLE_FILE))
    renderer = layer.renderer()
    # The shipped style fixes the colours and opacity; the class breaks follow this answer's scores.
    if renderer is not None and renderer.type() == "graduatedSymbol" and layer.featureCount():
        renderer.updateClasses(layer, len(renderer.ranges()) or 5)
        label_attention_shares(layer, renderer)
    # Shown as the layer's tooltip in the Layers panel (its name is the question).
    layer.setTitle(tr(LAYER_TITLE))
    layer.setAbstract(tr("Each class is labelled with the share of the model's attention its cells "
                         "hold, out of all the cells shown (the finest level it read). Raw "
                         "scores are in the score field."))


def share_text(share: float) -> str:
    """'42%', '3.5%', '<0.1%': a share a person reads, with the digits that tell classes apart."""
    percent = 100.0 * share
    if percent <= 0.0:
        return "0%"
    if percent < 0.1:
        return "<0.1%"
    return f"{percent:.0f}%" if percent >= 10 else f"{percent:.1f}%"


def class_shares(scores, ranges) -> list:
    """Each class's share of the summed scores: the top of a class is included, the bottom only in
    the first class (how QGIS assigns values to graduated classes)."""
    total = sum(max(0.0, s) for s in scores) or 1.0
    sums = [0.0] * len(ranges)
    for score in scores:
        for index, (lower, upper) in enumerate(ranges):
            if (lower < score or (index == 0 and lower <= score)) and score <= upper:
                sums[index] += max(0.0, score)
                break
    return [value / total for value in sums]


def label_attention_shares(layer: QgsVectorLayer, renderer) -> None:
    """Legend labels as shares of the attention ("42% of the model's attention") instead of raw
    scores ("0.00333 - 0.00414"), which say nothing to a person reading the map."""
    scores = [float(f["score"]) for f in layer.getFeatures()]   # the cells shown (subset applies)
    ranges = [(r.lowerValue(), r.upperValue()) for r in renderer.ranges()]
    for index, share in enumerate(class_shares(scores, ranges)):
        renderer.updateRangeLabel(index, tr("{share} of the model's attention").format(
            share=share_text(share)))


def add_heat_layer(project: QgsProject, raster_layer, answer: dict,
                   folder: Optional[Path] = None, notes: Optional[list] = None) -> QgsVectorLayer:
    """GUI thread only: writes the heatmap as a layer of the project's GeoPackage and adds it,
    styled, to the raster's group. What a person should know (the GeoPackage could not be written
    and another file was used) is appended to `notes`."""
    crs = heat_crs(raster_layer, answer.get("crs_wkt") or "")
    path, layer_name, note = write_heat_gpkg(answer, crs, heatmap_gpkg(project, raster_layer.name(),
                                                                      folder))
    if note and notes is not None:
        notes.append(note)
    layer = QgsVectorLayer(f"{path}|layername={layer_name}",
                           layer_name_for(answer.get("question", "")) or tr("Where it looked"), "ogr")
    if not layer.isValid():
        raise OSError(tr("The heatmap {path} was written but cannot be opened.").format(path=path))
    style_heat_layer(layer)
    layer.setCustomProperty(HEAT_PROPERTY, True)   # before it is added: the dock hides it from scopes
    project.addMapLayer(layer, False)
    show_in_raster_group(project, raster_layer, layer)
    return layer


def move_unsaved_heatmaps(project: QgsProject) -> dict:
    """The heat layers whose GeoPackage is in the profile folder (made before the project was
    first saved) copied into the project's GeoPackage beside it, and the layers re-pointed there
    (setDataSource keeps their style, id and place). A layer that cannot be copied stays where it
    is. Returns {layer id: new file}; nothing when the project has no file name."""
    from .engine import RsVqaError, copy_heatmap_layer, delete_heatmap_layer

    if not project.fileName():
        return {}
    unsaved = unsaved_heatmap_folder().resolve()
    moved = {}
    for layer in heat_layers(project):
        source, _, options = layer.source().partition("|")
        old = Path(source)
        if old.resolve().parent != unsaved or not options.startswith("layername="):
            continue
        old_layer = options[len("layername="):].split("|")[0]
        try:
            target = copy_heatmap_layer(old, old_layer, heatmap_gpkg(project, ""),
                                        base=old_layer)
        except (RsVqaError, RuntimeError, OSError):
            continue   # still readable where it is; the next save tries again
        subset = layer.subsetString()
        layer.setDataSource(f"{target.path}|layername={target.layer}", layer.name(), "ogr")
        layer.setSubsetString(subset)
        moved[layer.id()] = target.path
        # Moved, not copied. The file stays, even empty: QGIS may still hold a pooled connection
        # to it, which would recreate it as an empty file (not a GeoPackage) if it were deleted.
        try:
            delete_heatmap_layer(old, old_layer)
        except (RsVqaError, RuntimeError, OSError):
            pass   # a layer left behind in the profile folder costs disk space, never a heatmap
    return moved


def show_in_raster_group(project: QgsProject, raster_layer, layer: QgsVectorLayer,
                         raster_name: str = "") -> None:
    """Mark `layer` as a heat layer, put it on top of the raster's group (moved there when it is
    elsewhere in the layer tree) and show it alone there. `raster_name` names the group of a
    raster that is not in the project (raster_layer None)."""
    layer.setCustomProperty(HEAT_PROPERTY, True)   # saved with the project: ours, not a scope
    group = raster_group(project, raster_layer, raster_name)
    node = project.layerTreeRoot().findLayer(layer.id())
    if node is None:
        group.insertLayer(0, layer)
    elif node.parent() is not group:
        # The clone first: a layer whose last node leaves the tree leaves the project too.
        group.insertChildNode(0, node.clone())
        node.parent().removeChildNode(node)
    show_only(group, layer)


def show_only(group: QgsLayerTreeGroup, layer: QgsVectorLayer) -> None:
    """The latest answer's heat layer is the one shown: the earlier ones stay in the raster's group,
    unchecked (heat layers piled up, all visible, were unreadable)."""
    for node in group.findLayers():
        other = node.layer()
        if other is not None and other.id() != layer.id() and other.customProperty(HEAT_PROPERTY, False):
            node.setItemVisibilityChecked(False)
