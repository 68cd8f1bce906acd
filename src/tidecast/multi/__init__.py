"""`workers N`: one server made of N processes sharing the listening ports (SO_REUSEPORT).

`supervisor.py` is the process `tidecast serve` runs when workers > 1: it starts,
restarts and signals the workers and owns the pid file. Each worker is an
ordinary `App` given a `WorkerRole` (`role.py`); `node.py` adds what a worker
needs on top: a private API and RTMP port on loopback, the in-host relay of a
stream published to a sibling (`relay.py`, the edge's ingester pointed at the
sibling) and the public API answers aggregated across workers (`aggregate.py`).
"""
