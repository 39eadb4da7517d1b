"""Locust load tests and the headless SLO runner (`chorus loadtest`)."""
