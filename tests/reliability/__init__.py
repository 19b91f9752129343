"""Reliability tests (issue #7): crashes, bad input, load and security, on the real broker.

What each test shows and the figures measured are written up in docs/RELIABILITY.md.
"""
