"""Lepton's web console: server-rendered pages over the platform's public APIs.

A person signs in with an API key (:mod:`lepton_console.sessions` keeps it in this process's
memory only); every page is fetched through the SDK with that key, so the console shows exactly
what the key may see (:mod:`lepton_console.pages`). Charts are inline SVG drawn on the server
(:mod:`lepton_console.charts`); the events page streams the tenant's events as server-sent events
(:mod:`lepton_console.web`); every string is in English and Simplified Chinese
(:mod:`lepton_console.i18n`). docs/architecture.md, 'The console', says why.
"""
