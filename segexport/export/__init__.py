"""ONNX export (``onnx_export``), metadata (``metadata``), verification on ONNX Runtime
(``verify_onnx``), the export stage (``stage.export_model``) and the TensorRT-compatibility check.

Import the submodules directly; this package imports nothing, so that ``segexport check`` does
not pay for torch.
"""
