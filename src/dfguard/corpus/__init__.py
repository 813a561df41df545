"""The demo corpus: real clips synthesised from real face photos, and manipulated clips made from them.

The file names below are the corpus's public layout; ingestion reads them, so they live here, where
importing them loads nothing heavy.
"""

CORPUS_INDEX = "dfguard_corpus.json"
CONTACT_SHEET = "contact_sheet.jpg"
