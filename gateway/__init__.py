"""gbgate: a GB/T 28181 gateway for social-resource cameras."""

__version__ = "0.1.0"
