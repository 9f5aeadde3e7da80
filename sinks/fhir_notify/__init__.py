"""`vitals sink fhir-notify`: alert state changes to FHIR Subscription endpoints."""
