"""An answer's heat cells as a styled GeoPackage layer in the raster's CRS, grouped per raster."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Optional

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransformContext, QgsFeature,
                       QgsField, QgsFields, QgsGeometry, QgsLayerTreeGroup, QgsPointXY,
                       QgsProject, QgsVectorFileWriter, QgsVectorLayer, QgsWkbTypes)
from qgis.PyQt.QtCore import QCoreApplication, QVariant

from ..paths import resources_dir
from ..settings import plugin_data_dir

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
        folder = plugin_data_dir() / "heatmaps"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def heat_layers(project: QgsProject) -> list:
    return [layer for layer in project.mapLayers().values()
            if layer.customProperty(HEAT_PROPERTY, False)]


def layer_name_for(question: str) -> str:
    name = " ".join(question.split())
    return name if len(name) <= MAX_NAME else name[:MAX_NAME - 1] + "…"


def _file_stem(raster_name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", raster_name).strip("_")[:40] or "raster"
    return f"{stem}_{time.strftime('%Y%m%d_%H%M%S')}_{int(time.time() * 1000) % 1000:03d}"


def write_heat_gpkg(answer: dict, crs: QgsCoordinateReferenceSystem, path: Path) -> Path:
    """Write the cells atomically (temporary file, then rename): a failed write leaves nothing."""
    fields = QgsFields()
    for name, kind in (("question", QVariant.String), ("score", QVariant.Double),
                       ("level", QVariant.Int), ("tile", QVariant.String), ("rank", QVariant.Int),
                       ("kind", QVariant.String)):
        fields.append(QgsField(name, kind))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "heatmap"
    tmp = path.with_name(path.stem + ".part.gpkg")
    writer = QgsVectorFileWriter.create(str(tmp), fields, QgsWkbTypes.Polygon, crs,
                                        QgsCoordinateTransformContext(), options)
    if writer.hasError() != QgsVectorFileWriter.NoError:
        raise OSError(tr("Cannot write the heatmap {path}: {error}").format(
            path=path, error=writer.errorMessage()))
    question = answer.get("question", "")
    for cell in answer.get("heat_cells") or []:
        feature = QgsFeature(fields)
        ring = [QgsPointXY(float(x), float(y)) for x, y in cell["ring"]]
        feature.setGeometry(QgsGeometry.fromPolygonXY([ring]))
        tile = cell.get("tile") or ()
        feature.setAttributes([question, float(cell.get("score", 0.0)), int(cell.get("level", 0)),
                               ",".join(str(v) for v in tile), int(cell.get("rank", 0)),
                               str(cell.get("kind", ""))])
        writer.addFeature(feature)
    del writer   # closes the file
    tmp.replace(path)
    return path


def raster_group(project: QgsProject, raster_layer) -> QgsLayerTreeGroup:
    root = project.layerTreeRoot()
    name = GROUP_PREFIX + raster_layer.name()
    group = root.findGroup(name)
    if group is None:
        # Above the raster so the heat cells draw over it.
        raster_node = root.findLayer(raster_layer.id())
        parent = raster_node.parent() if raster_node is not None else root
        index = parent.children().index(raster_node) if raster_node is not None else 0
        group = parent.insertGroup(index, name)
    return group


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
                   folder: Optional[Path] = None) -> QgsVectorLayer:
    """GUI thread only: writes the GeoPackage and adds the styled layer to the raster's group."""
    crs = QgsCoordinateReferenceSystem.fromWkt(answer.get("crs_wkt") or "")
    if not crs.isValid():
        crs = raster_layer.crs()
    folder = folder or heatmap_folder(project)
    path = write_heat_gpkg(answer, crs, folder / (_file_stem(raster_layer.name()) + ".gpkg"))
    layer = QgsVectorLayer(f"{path}|layername=heatmap",
                           layer_name_for(answer.get("question", "")) or tr("Where it looked"), "ogr")
    if not layer.isValid():
        raise OSError(tr("The heatmap {path} was written but cannot be opened.").format(path=path))
    style_heat_layer(layer)
    layer.setCustomProperty(HEAT_PROPERTY, True)   # saved with the project: ours, not a scope
    project.addMapLayer(layer, False)
    group = raster_group(project, raster_layer)
    group.insertLayer(0, layer)
    show_only(group, layer)
    return layer


def show_only(group: QgsLayerTreeGroup, layer: QgsVectorLayer) -> None:
    """The latest answer's heat layer is the one shown: the earlier ones stay in the raster's group,
    unchecked (heat layers piled up, all visible, were unreadable)."""
    for node in group.findLayers():
        other = node.layer()
        if other is not None and other.id() != layer.id() and other.customProperty(HEAT_PROPERTY, False):
            node.setItemVisibilityChecked(False)
