"""The parity report: every flavor on every available backend against the reference."""
