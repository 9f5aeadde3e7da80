"""FHIR R4 at the gateway: POST /fhir/r4 takes a batch or transaction Bundle (docs/fhir.md)."""
