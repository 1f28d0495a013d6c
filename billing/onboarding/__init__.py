"""Onboarding the host application's existing users and their usage."""
