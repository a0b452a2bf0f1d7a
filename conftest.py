"""Root conftest: the shared fixtures that start real NATS, Triton and the platform."""

pytest_plugins = ["lepton_platform.testing"]
