"""Precision variants of an FP32 ONNX model: INT8 (``int8``: TensorRT and CPU targets, from
calibrated ranges, ``calibrate``), FP16 (``fp16``), the sensitivity pass (``sensitivity``) and
the stage that judges them against a budget (``stage.quantize_model``).

Import the submodules directly; this package imports nothing, so that the CLI stays fast.
"""
