"""Reconciliation for accountants: the ledger's settlements against Sippy's statement."""
