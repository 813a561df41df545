"""The detection service's logic: everything `service/service.py` wires into BentoML (the served model
and its replacement, judging uploads, input safety, readiness, the launcher and a client)."""
