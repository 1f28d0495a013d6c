"""Notifications for users: stored once each, delivered to signed webhooks."""
