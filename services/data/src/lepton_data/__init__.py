"""The data service: dataset upload, immutable content-addressed versions, look-up."""
