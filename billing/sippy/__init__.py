"""Sippy: the XML-RPC client and the simulator that stands in for the switch in tests and demos."""
