"""The peer ledger measured beside smsledger (issue 8): django-hordak in its own environment."""
