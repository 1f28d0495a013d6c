"""Invoicing: billing periods, closing them into invoices, the billing cycle, the admin's invoice
actions, what users and admins see of invoices."""
