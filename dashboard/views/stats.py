"""Stats: labels, agreement with the model and between reviewers, the queue."""

from dashboard.pages import stats_page

stats_page()
