"""``python -m lepton_gateway``: runs the inference gateway."""

from __future__ import annotations

import asyncio

from lepton_core.logs import setup_logging
from lepton_gateway.server import serve
from lepton_gateway.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    setup_logging("gateway", settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
