"""rs-vqa: ask questions about huge rasters in QGIS. QGIS calls classFactory; nothing heavy is imported here."""

__version__ = "0.1.0"


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin import RsVqaPlugin

    return RsVqaPlugin(iface)
