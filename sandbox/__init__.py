"""A faithful local WeChat Pay v3 server, for development and tests (no network needed)."""
