"""``python -m lepton_console``: runs the web console."""

from __future__ import annotations

import asyncio

from lepton_console.server import serve
from lepton_console.settings import ConsoleSettings
from lepton_core.logs import setup_logging


def main() -> None:
    settings = ConsoleSettings()
    setup_logging("console", settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
