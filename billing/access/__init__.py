"""Who may call: API keys for the services and staff, signed tokens for end users."""
