"""``lepton up``: the whole platform on this machine, from lepton-platform (an extra of the SDK)."""

from __future__ import annotations

from lepton_ai.errors import FailedPrecondition

#: What to install for `lepton up`: the SDK alone talks to a platform, it does not run one.
INSTALL_PLATFORM = "pip install 'lepton-ai[platform]'"


def up() -> None:
    """Run the whole platform on this machine until Ctrl-C."""
    try:
        from lepton_platform.embedded import main as embedded_main
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "lepton_platform":
            raise
        # The command on a line of its own: rich would wrap it mid-way at 80 columns.
        raise FailedPrecondition(
            "lepton up runs the platform (NATS, Triton, the six services) on this machine and needs "
            f"lepton-platform, which is not installed. Install it with:\n  {INSTALL_PLATFORM}"
        ) from None

    embedded_main()
