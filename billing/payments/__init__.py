"""Payments: charging invoices in Sippy exactly once, and the Sippy client with its wire formats."""
