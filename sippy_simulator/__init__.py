"""A stand-in for the Sippy switch in tests and demos: its XML-RPC methods, accounts and payment
history, and faults on demand. A development tool: production code never imports it."""
