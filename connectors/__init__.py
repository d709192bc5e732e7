"""Adapters that expose the plugin to other automation platforms."""
