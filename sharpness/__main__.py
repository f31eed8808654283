"""``python -m sharpness`` (and ``torchrun -m sharpness``) runs the command line."""

from .cli import main

main()
