"""The console process: the HTTP(S) server until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

from aiohttp import web

from lepton_console.settings import ConsoleSettings
from lepton_console.web import make_app

log = logging.getLogger("lepton_console")


def ssl_context(settings: ConsoleSettings) -> ssl.SSLContext | None:
    """HTTPS with the settings' certificate, or None for plaintext (loopback, or ``insecure``)."""
    if not (settings.tls_cert_file and settings.tls_key_file):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


async def serve(settings: ConsoleSettings) -> None:
    """Serves the console until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(make_app(settings), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    tls = ssl_context(settings)
    await web.TCPSite(runner, settings.host, settings.port, ssl_context=tls).start()
    scheme = "https" if tls else "http"
    log.info(
        "console serving",
        extra={"url": f"{scheme}://{settings.host}:{settings.port}", "platform": settings.platform_url},
    )
    await stop.wait()
    log.info("console stopping")
    await runner.cleanup()
    log.info("console stopped")
