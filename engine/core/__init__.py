"""The pure core: journey loading, the catalog, the interpreter, timers and graphs.

No I/O and no clock: every function takes `now`; nothing here imports faust, aiokafka or httpx.
"""
