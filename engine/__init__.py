"""The journey engine: pure interpreter and loader, plus the faust-streaming runtime.

Importing this package pulls in no faust, aiokafka or httpx; the runtime modules do.
"""
