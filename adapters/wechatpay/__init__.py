"""WeChat Pay: signing, verification, encryption (and, as it lands, the client)."""
