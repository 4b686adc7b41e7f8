"""``python -m repaint`` (and ``torchrun -m repaint``) runs the command line."""

from .cli import main

main()
