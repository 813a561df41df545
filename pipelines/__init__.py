"""Prefect flows: decorators and wiring only. The work is done by the plain functions of `dfguard`."""
