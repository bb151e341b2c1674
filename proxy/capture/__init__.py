"""Transparent capture: the `pilotfish iptables` init command (pure rules, one executor, a CLI)."""
