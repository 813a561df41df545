"""The one predictor that evaluation, the service, the dashboard and the tests use."""
