"""What tests/ and bench/ share, so the two never drift: a tidecast process runner, the clip maker,
HTTP helpers, and RTMP/HTTP-FLV players and publishers (blocking ones here, asyncio ones in bench/benchlib.py
built on the same pieces).

`tests/conftest.py` and the bench tools put the repository root on `sys.path`; nothing here is installed.
"""
