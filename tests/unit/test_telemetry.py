"""effstack declines OpenVINO's usage telemetry in its own process (no network, no hang, nothing agreed to)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# a fresh interpreter (openvino is imported once per process, and its import already posts an event): count
# what reaches the backend that would post it, with a home folder that holds no consent file (OpenVINO's tools
# take that as consent)
SCRIPT = """
from openvino_telemetry.backend import backend_ga4
sent = []
backend_ga4.GA4Backend.send = lambda self, message: sent.append(message)
from effstack._optional import require
require("openvino")
from openvino_telemetry.main import Telemetry
Telemetry().sender.executor.shutdown(wait=True)
print("sent", len(sent))
"""


def _events_sent(tmp_path, allow: bool) -> int:
    pytest.importorskip("openvino_telemetry")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL", "EFFSTACK_ALLOW_TELEMETRY")}
    env["HOME"] = str(tmp_path)
    if allow:
        env["EFFSTACK_ALLOW_TELEMETRY"] = "1"
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split("sent")[-1])


def test_openvino_sends_no_telemetry_through_effstack(tmp_path):
    assert _events_sent(tmp_path, allow=False) == 0


def test_a_user_can_leave_openvinos_own_consent_rules_in_charge(tmp_path):
    assert _events_sent(tmp_path, allow=True) >= 1  # proves the counter above would see an event
