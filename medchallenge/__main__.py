"""`python -m medchallenge` runs the command-line interface."""

from medchallenge.cli import main

main()
