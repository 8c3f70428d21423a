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


def strip_source_metadata(path) -> None:
    """Drop the per-node metadata the exporter writes (Python stack traces with the absolute
    paths of the machine that exported): a shipped bundle must not carry them. Weights kept in a
    `.onnx.data` file are referenced, not loaded, and stay where they are."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def clean(graph) -> None:
        for item in list(graph.value_info) + list(graph.input) + list(graph.output):
            del item.metadata_props[:]
        for node in graph.node:
            del node.metadata_props[:]
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    clean(attribute.g)
                for sub in attribute.graphs:
                    clean(sub)

    clean(model.graph)
    for function in model.functions:
        for node in function.node:
            del node.metadata_props[:]
    onnx.save(model, str(path))
