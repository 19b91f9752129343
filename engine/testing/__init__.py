"""Test support for journeys: the real interpreter on a virtual clock, without Kafka or network.

`suite.load_suite` reads a test file (schemas/journey_test.py), `runner.Simulator` plays a
profile's events through the interpreter and the connectors' rules, and `expect` compares
the trace with a case's expectations. `journeyctl test` and `journeyctl simulate` use them.
"""
