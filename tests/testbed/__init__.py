"""The real test bed: a Kubernetes control plane and Prometheus, started by the project's own code.

`tests/testbed/build` installs and builds the binaries once (cached under $BATON_CACHE); the classes
here start them on loopback for pytest fixtures (`fixtures.py`) and for `python -m tests.testbed up`.
"""

from tests.testbed.controlplane import ControlPlane
from tests.testbed.processes import StartupError
from tests.testbed.prometheus import Prometheus

__all__ = ["ControlPlane", "Prometheus", "StartupError"]
