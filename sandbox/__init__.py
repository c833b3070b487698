"""A faithful local WeChat Pay server (v3 JSON and v2 XML, mini-program login, 公众号 web authorisation, trade
and fund flow bills, mutual TLS for /secapi), for development and tests: no network needed (docs/sandbox.md)."""
