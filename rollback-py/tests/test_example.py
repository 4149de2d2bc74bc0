"""examples/python/health_check.py end to end: a real HTTP /health endpoint whose
answer follows the deployed release; the script assesses, rolls back the failing
phase only, verifies and prints the record."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import rollback

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python" / "health_check.py"


@pytest.fixture
def service(tmp_path):
    releases = tmp_path / "releases"
    for v in ("v1", "v2"):
        (releases / v).mkdir(parents=True)
    (releases / "current").symlink_to("v1")

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            good = os.readlink(releases / "current") == "v1"
            body = (
                {"status": "healthy", "error_rate": 0.01, "perf_degradation": 0.02, "latency_ms": 40}
                if good
                else {"status": "degraded", "error_rate": 0.31, "perf_degradation": 0.55, "latency_ms": 180}
            )
            data = json.dumps(body).encode()
            self.send_response(200 if good else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/health"
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "strategy.toml").write_text("spread = 0.002\n")
    (tmp_path / "rollback.toml").write_text(f"""
[[component]]
name = "config"
driver = "files"
phase = 1
paths = ["conf"]

[[component]]
name = "api"
driver = "releases"
phase = 2
root = "releases"
health = [{{ http = "{url}", status = 200, json = {{ status = "healthy" }}, timeout = "5s" }}]
""")
    yield tmp_path, url
    server.shutdown()


def run_example(root, url, **env):
    return subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env={**os.environ, "ROLLBACK_CONFIG": str(root / "rollback.toml"), "HEALTH_URL": url, **env},
        capture_output=True, text=True, timeout=120,
    )


def test_health_script_rolls_back_the_failing_phase(service):
    root, url = service
    stack = rollback.Stack.load(root / "rollback.toml")
    good = stack.snapshot(label="v1")
    assert good.healthy is True

    healthy = run_example(root, url)
    assert healthy.returncode == 0, healthy.stderr
    assert "fix forward" in healthy.stdout and not stack.history()

    # The bad deploy: a new release and a config change; only the release breaks /health.
    (root / "releases" / "current").unlink()
    (root / "releases" / "current").symlink_to("v2")
    (root / "conf" / "strategy.toml").write_text("spread = 0.5\n")
    stack.snapshot(label="v2")  # taken unhealthy: last-good still names v1

    out = run_example(root, url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "severity=high decision=rollback" in out.stdout
    assert "Plan: phase rollback to snapshot " + good.id in out.stdout
    doc = json.loads(out.stdout[out.stdout.index("{\n"): out.stdout.rindex("\n}") + 2])
    assert doc["status"] == "succeeded" and doc["level"] == "phase" and doc["phases"] == [2]
    assert doc["components"] == ["api"] and doc["snapshot_id"] == good.id
    assert doc["trigger"] == "error_rate" and doc["severity"] == "high"
    assert [s["action"] for s in doc["steps"]] == ["restore", "health_gate", "verify"]
    assert os.readlink(root / "releases" / "current") == "v1"
    # Phase 1 was not failing: left as deployed.
    assert (root / "conf" / "strategy.toml").read_text() == "spread = 0.5\n"
    assert stack.history()[-1].rollback_id == doc["rollback_id"]
    assert "rollback" in out.stderr  # library log records through `logging`


def test_health_script_reports_bad_input(service):
    root, url = service
    out = run_example(root, url, ROLLBACK_CONFIG=str(root / "missing.toml"))
    assert out.returncode == 2 and "missing.toml" in out.stderr
