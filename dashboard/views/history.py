"""History: the predictions, searchable, with each one's detail."""

from dashboard.pages import history_page

history_page()
