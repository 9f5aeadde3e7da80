"""The pipeline's error hierarchy, defined once.

The gateway maps these to problem+json in one place (frontdoor/problems.py); consumers map
ContractError to the dead-letter topic in one place (vitals/kafka.py: park).
"""


class VitalsError(Exception):
    """Base of every error this package raises on purpose."""


class ContractError(VitalsError):
    """A message does not follow the wire contract: it is parked, never retried."""


class ConfigError(VitalsError):
    """Settings or rules that cannot work; raised at start with a clear message."""


class InfrastructureError(VitalsError):
    """A broker or database could not be reached or started."""
