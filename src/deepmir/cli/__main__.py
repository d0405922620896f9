"""``python -m deepmir.cli``: the deepmir command without the console script."""

from deepmir.cli import _entry

_entry()
