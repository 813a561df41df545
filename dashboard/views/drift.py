"""Drift and loop: the feedback loop's drift reports and runs."""

from dashboard.pages import drift_page

drift_page()
