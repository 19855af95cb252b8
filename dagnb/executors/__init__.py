"""Executors: where a step runs (the host, or containers through Dagger)."""
