"""tidecast: a cloud-native live-streaming cluster, drop-in for SRS deployments."""

__version__ = "0.1.0"
SERVER_NAME = "tidecast"
