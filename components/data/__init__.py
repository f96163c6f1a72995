"""Data: ingest (folders, listings, the sample, splits, snapshots) and validation (the
great-expectations suite, the quarantine, drift)."""
