"""Flows: the flow table, reassembly of the first client bytes, and flow records."""
