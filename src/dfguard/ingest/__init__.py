"""Dataset ingestion: a folder of videos and images becomes a manifest with identity-disjoint splits."""

from dfguard.ingest.run import IngestResult, run_ingest

__all__ = ["IngestResult", "run_ingest"]
