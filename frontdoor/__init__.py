"""What both HTTP front doors (the gateway, `ingest/`, and the read API, `readapi/`) share:
uvicorn bounded as RFC 9112 asks (protocol, server), problem+json errors, credentials and
the registry they are checked against, rate limits, the audit queue and request metrics."""
