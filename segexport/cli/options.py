"""Option texts shared by several commands, declared once."""

from __future__ import annotations

FORCE_HELP = ("Write even where the output holds files segexport did not write, or another model's "
              "artifacts (segexport's own files are replaced atomically; nothing else is deleted).")
