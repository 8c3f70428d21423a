"""The QGIS side of rs-vqa: chat dock, settings, worker client, heat layers. Never imports torch."""
