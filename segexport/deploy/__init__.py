"""Deployment: ``segexport predict`` (``predict``), the Triton model repository (``triton``, with its
README in ``triton_readme``) and the self-contained Triton Python-backend model (``triton_python_model``).

Import the submodules directly; this package imports nothing, so that the CLI stays fast.
"""
