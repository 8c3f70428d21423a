"""Training of the bundled default model (models/default): recipe, data, model, loop, export.

Entry point: `python -m rs_vqa_plugin train-default OUT_DIR` (commands/train_default.py)."""
