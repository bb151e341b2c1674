"""Codec tests: llhttp and h11 side by side, each the oracle for the other."""
