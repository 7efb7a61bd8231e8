"""`python -m dragonfly.cli`: the `dragonfly` command."""

from dragonfly.cli import main

main()
