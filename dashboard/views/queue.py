"""The review queue: the next item to label, leased to the signed-in reviewer."""

from dashboard.pages import queue_page

queue_page()
