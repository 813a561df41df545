"""Benchmarks: face extraction against a dlib peer (`extract`) and `dfguard detect` latency (`detect`)."""
