"""RAY_ADDRESS that points nowhere: a bounded wait and an error that names the address, not minutes of retries."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from nas.controller.cluster import gcs_unreachable


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gcs_probe__a_listening_port_is_reachable_and_a_closed_one_says_why():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert gcs_unreachable(f"127.0.0.1:{server.getsockname()[1]}") is None
    assert "refused" in gcs_unreachable(f"127.0.0.1:{closed_port()}").lower()
    assert gcs_unreachable("127.0.0.1:not-a-port") is not None


def test_ensure_ray__an_unreachable_address_fails_after_the_wait_and_names_it():
    address = f"127.0.0.1:{closed_port()}"
    script = (
        "from nas.controller.cluster import RayUnreachable, ensure_ray\n"
        "try:\n    ensure_ray(wait_s=1)\nexcept RayUnreachable as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "RAY_ADDRESS": address},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"cannot reach the Ray cluster at RAY_ADDRESS={address} within 1 s" in result.stdout
