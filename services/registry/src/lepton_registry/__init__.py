"""The registry service: registered models, versions and their lineage."""
