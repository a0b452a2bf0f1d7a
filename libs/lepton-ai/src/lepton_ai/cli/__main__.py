"""``python -m lepton_ai.cli``: the ``lepton`` command."""

from lepton_ai.cli import main

main()
