"""`python -m engine.cli`: the same `journeyctl` command, for environments without the script."""

from engine.cli.main import main

main(prog_name="journeyctl")
