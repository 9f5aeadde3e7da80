"""The read API (`vitals api`): a second HTTP front door, for readers rather than gateways.

Its own process, app, credentials and read-only database sessions: a clinician dashboard's
traffic never competes with uploads, and a reader token can never upload (nor a gateway
key read). docs/read-api.md documents the endpoints.
"""
