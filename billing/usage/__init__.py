"""Usage: every SMS rated and posted as a usage transfer, the pre-send check, the threshold hook,
rate sheets."""
