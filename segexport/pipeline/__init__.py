"""The build pipeline: ``segexport build ARCH`` as a library call, stages cached by content hash.

- :mod:`~segexport.pipeline.options`: options resolved against the recipe and checked up front;
- :mod:`~segexport.pipeline.cache` and :mod:`~segexport.pipeline.stages`: stage keys, records, reuse;
- :mod:`~segexport.pipeline.reference`, :mod:`~segexport.pipeline.precision`,
  :mod:`~segexport.pipeline.export_stage`, :mod:`~segexport.pipeline.engines`: the stages;
- :mod:`~segexport.pipeline.sources`: what a build starts from (architecture, checkpoint, weights file);
- :mod:`~segexport.pipeline.core`: :func:`build`, which composes them and verifies the result.
"""

from segexport.pipeline.core import build
from segexport.pipeline.options import BuildOptions

__all__ = ["BuildOptions", "build"]
