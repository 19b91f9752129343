"""Operators' view inside the running engine: profile lookup, `journeyctl inspect`, the web console."""
