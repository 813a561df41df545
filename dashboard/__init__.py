"""The reviewers' Streamlit dashboard (`dfguard dashboard` runs `app.py`)."""
