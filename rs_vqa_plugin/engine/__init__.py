"""The engine: pyramid, models, selection and answers. Knows nothing of Qt or QGIS.

torch and onnxruntime are imported lazily inside the modules that run them.
"""
