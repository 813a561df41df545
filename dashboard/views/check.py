"""Check a file: an upload judged by the detection service."""

from dashboard.pages import check_page

check_page()
