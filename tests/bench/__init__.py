"""The side-by-side benchmark behind `make bench` (`python -m tests.bench`).

Not a test suite: it starts the direct upstream, nginx and relaygate on loopback,
drives each with wrk and prints throughput, latency and CPU per request in one table.
"""
