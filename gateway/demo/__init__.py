"""`gbgate demo`: the gateway plus a simulated site of cameras (run.py), and that site (site.py).

The simulated devices are `devsim`, the same swarm the tests and benchmarks use.
"""

from gateway.demo.run import run_demo

__all__ = ["run_demo"]
