"""Evaluation: metrics, the blessing and the report, candidate against the served model."""
