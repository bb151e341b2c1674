"""Tests for the proxy package."""
