"""Serving: the serving signature, TF Serving's layout and config, and the push step."""
