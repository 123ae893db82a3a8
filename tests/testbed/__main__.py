"""`python -m tests.testbed up|down|status`: the test bed by hand, for demos and debugging.

`up` starts a control plane (and, with --scrape, Prometheus) that outlives the command and prints the
KUBECONFIG to use; `down` stops what `up` started, found through a state file in $BATON_CACHE/testbed
(or $BATON_TESTBED_DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from tests.testbed import binaries
from tests.testbed.controlplane import ControlPlane
from tests.testbed.processes import StartupError, terminate
from tests.testbed.prometheus import Prometheus


def _run_dir() -> Path:
    # Overridable so a test of these commands never touches a test bed someone started by hand.
    return Path(os.environ.get("BATON_TESTBED_DIR", binaries.cache_dir() / "testbed"))


def _state_file() -> Path:
    return _run_dir() / "state.json"


def _alive(pid: int, binary: str) -> bool:
    # Matches the command line too, so a recycled pid is never taken for (or killed as) ours.
    try:
        return binary in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except (FileNotFoundError, ProcessLookupError):
        return False


def _running(state: dict) -> bool:
    return all(_alive(pid, name) for name, pid in state["pids"].items())


def up(scrape: list[str]) -> int:
    state_file = _state_file()
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if _running(state):
            _print(state)
            return 0
        down()
    run = _run_dir()
    shutil.rmtree(run, ignore_errors=True)
    plane = ControlPlane(run / "kube", tied_to_parent=False)
    try:
        plane.start()
    except StartupError as error:
        print(error, file=sys.stderr)
        return 1
    state = {"server": plane.server, "kubeconfig": str(plane.kubeconfig), "pids": plane.pids}
    if scrape:
        prometheus = Prometheus(scrape, workdir=run / "prometheus", tied_to_parent=False)
        try:
            state["prometheus"] = prometheus.start()
        except StartupError as error:
            plane.stop(remove_workdir=False)
            print(error, file=sys.stderr)
            return 1
        state["pids"]["prometheus"] = prometheus.pid
    state_file.write_text(json.dumps(state, indent=2))
    print(f"control plane ready in {plane.startup_seconds:.1f} s")
    _print(state)
    return 0


def down() -> int:
    state_file = _state_file()
    if not state_file.exists():
        print("test bed is not running")
        return 0
    state = json.loads(state_file.read_text())
    # Prometheus and the API server first: etcd goes last, as the API server depends on it.
    for name in ("prometheus", "kube-apiserver", "etcd"):
        pid = state["pids"].get(name)
        if pid is not None and _alive(pid, name):
            terminate(pid)
    shutil.rmtree(_run_dir(), ignore_errors=True)
    print("test bed stopped")
    return 0


def status() -> int:
    state_file = _state_file()
    if not state_file.exists() or not _running(state := json.loads(state_file.read_text())):
        print("test bed is not running")
        return 1
    _print(state)
    return 0


def _print(state: dict) -> None:
    print(f"server:     {state['server']}")
    if "prometheus" in state:
        print(f"prometheus: {state['prometheus']}")
    print(f"export KUBECONFIG={state['kubeconfig']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the API server (and Prometheus with --scrape)")
    start.add_argument(
        "--scrape", action="append", default=[], metavar="HOST:PORT", help="a Prometheus target"
    )
    commands.add_parser("down", help="stop what `up` started")
    commands.add_parser("status", help="print the server and KUBECONFIG if running")
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(args.scrape)
    return down() if args.command == "down" else status()


if __name__ == "__main__":
    sys.exit(main())
