"""TensorRT engines: availability (``engine_unavailable_reason``), the optimisation profile and the
equivalent ``trtexec`` line (``profile``), the build (``build.build_engine``) and the record
written beside each engine (``record``).

Nothing here imports ``tensorrt`` at import time; only building and running an engine do.
"""

from segexport.engine.availability import engine_unavailable_reason
from segexport.engine.build import build_engine
from segexport.engine.profile import trtexec_command

__all__ = ["build_engine", "engine_unavailable_reason", "trtexec_command"]
