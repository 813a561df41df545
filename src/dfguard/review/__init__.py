"""Human review of the service's predictions: the dashboard's accounts (`users`), the queue and its
leases (`queue`), agreement and pace (`stats`), and where the feedback loop's reports are read from
(`reports`). The Streamlit app in `dashboard/` is wiring over these."""
