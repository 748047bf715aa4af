"""Executors: where a plan runs (local, ray, hf-spaces)."""
