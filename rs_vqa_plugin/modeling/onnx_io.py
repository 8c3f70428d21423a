"""Small ONNX helpers shared by the exporters."""

from __future__ import annotations

# Protobuf cannot hold more than 2 GB; above 64 MB the weights go beside the graph anyway, so
# that the bundle loader can parse the graph cheaply (onnx.load without external data).
EXTERNAL_DATA_BYTES = 64_000_000


def external_data_needed(module) -> bool:
    """True when the weights must go to a `<name>.onnx.data` file beside the graph."""
    total = sum(p.numel() * p.element_size() for p in module.parameters())
    total += sum(b.numel() * b.element_size() for b in module.buffers())
    return total > EXTERNAL_DATA_BYTES
