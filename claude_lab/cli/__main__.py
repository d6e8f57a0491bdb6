"""`python -m claude_lab.cli`: the same as the `claude-lab` command."""
from . import main

main()
