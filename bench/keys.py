"""The plain keys the handlers write and the fixed payload (no heavy imports: worker
processes of every system import this through bench/handlers.py)."""

PAYLOAD = b"x" * 100  # the fixed 100-byte payload of every job
DONE = "bench:done"  # INCR per finished handler
STARTED = "bench:started"  # INCR per started handler (sleep kinds)
LAT = "bench:lat"  # RPUSH handler-start minus enqueue time, seconds (W3)
EVENTS = "bench:ev"  # RPUSH "<job id> <pid> <unix time>" per handler start (R1, D1)
