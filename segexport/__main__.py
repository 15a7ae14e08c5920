"""``python -m segexport`` is the ``segexport`` command."""

from segexport.cli import main

main()
