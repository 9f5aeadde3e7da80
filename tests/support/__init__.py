"""What the suites share: one module per subject, imported by tests, never a test itself.

The Node projects (the TimescaleDB WASM engine in `timescale/`, the console's browser
driver in `console/`) and the HAPI FHIR validator's runner (`fhir/`) live here too. The
fault suite's own harness (its broker cluster, load ledger, verdicts and report) stays in
`tests/faults/`, beside the only suite that uses it.
"""
