"""`python -m planner.cli`: the vlmplan command."""

from planner.cli.main import main

main()
