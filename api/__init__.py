"""The HTTP service: merchant API, WeChat callbacks, audit, operations."""
