"""TensorRT engines: availability (``engine_unavailable_reason``), the optimisation profile and the
equivalent ``trtexec`` line (``profile``), the build (``build.build_engine``) and the record
written beside each engine (``record``).

``trt_api`` is the only module of segexport that imports ``tensorrt``, and only when called:
importing segexport never imports it, and a missing or broken install becomes a one-line
``MissingDependencyError`` naming the wheel to install. The timing cache of a build is
checked and keyed in ``timing_cache``.
"""

from segexport.engine.availability import engine_unavailable_reason
from segexport.engine.build import build_engine
from segexport.engine.profile import trtexec_command

__all__ = ["build_engine", "engine_unavailable_reason", "trtexec_command"]
