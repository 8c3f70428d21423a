"""Synthetic large-scene benchmark in the LRS-VQA format: georeferenced scenes with known objects,
questions with known answers and boxes, and an oracle that answers from the sidecar alone."""
