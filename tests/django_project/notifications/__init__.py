"""Notifications: a second app whose events.py is autodiscovered."""
