"""ONNX export (``onnx_export``), metadata (``metadata``), verification on ONNX Runtime
(``verify_onnx``) and the TensorRT-compatibility check. The export *stage*, which resolves a
source and attaches post-processing, is composition and lives in ``pipeline.export_stage``.

Import the submodules directly; this package imports nothing, so that ``segexport check`` does
not pay for torch.
"""
