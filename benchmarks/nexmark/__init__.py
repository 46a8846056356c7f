"""The Nexmark benchmark: its event generator and plain-Python reference queries."""
