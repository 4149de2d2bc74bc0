"""Fixtures of the Python suite: scratch stacks on real git, files, releases and
command components, and the real PostgreSQL and Redis of this machine
(ROLLBACK_POSTGRES_URL, ROLLBACK_REDIS_URL; a missing server fails the tests)."""

import os
import subprocess
import uuid
from pathlib import Path

import pytest

POSTGRES_URL = os.environ.get("ROLLBACK_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("ROLLBACK_REDIS_URL", "redis://127.0.0.1:6379")


def sh(cwd, *argv, input=None):
    return subprocess.run(
        argv, cwd=cwd, input=input, check=True, capture_output=True, text=True
    ).stdout.strip()


def git(repo, *args):
    return sh(repo, "git", "-c", "user.name=rollback-test", "-c", "user.email=test@rollback.invalid", *args)


def make_repo(path: Path) -> str:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "app.py").write_text('print("v1")\n')
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "v1")
    return git(path, "rev-parse", "HEAD")


def commit(repo: Path, name: str, content: str, message: str) -> str:
    (repo / name).write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


BASIC_TOML = """
[rto]
complete = "5m"
phase = "15m"
component = "30m"

[[component]]
name = "code"
driver = "git"
phase = 1
repo = "repo"

[[component]]
name = "config"
driver = "files"
phase = 2
paths = ["conf"]

[[component]]
name = "release"
driver = "releases"
phase = 2
root = "releases"

[[component]]
name = "worker"
driver = "command"
phase = 3
capture = ["cat", "state.txt"]
restore = ["sh", "-c", "sleep {sleep}; cat > state.txt"]
"""


class Basic:
    """A stack of git (phase 1), files and releases (phase 2) and a command
    component (phase 3) whose restore sleeps `slow` seconds."""

    def __init__(self, root: Path, slow: float = 0.0):
        self.root = root
        self.repo = root / "repo"
        self.v1 = make_repo(self.repo)
        (root / "conf").mkdir()
        (root / "conf" / "app.toml").write_text('mode = "live"\n')
        for v in ("v1", "v2"):
            (root / "releases" / v).mkdir(parents=True)
        (root / "releases" / "current").symlink_to("v1")
        (root / "state.txt").write_text("one\n")
        self.config = root / "rollback.toml"
        self.config.write_text(BASIC_TOML.format(sleep=f"{slow:.3f}"))

    def deploy_bad(self):
        commit(self.repo, "app.py", 'print("v2 broken")\n', "v2")
        (self.root / "conf" / "app.toml").write_text('mode = "broken"\n')
        (self.root / "releases" / "current").unlink()
        (self.root / "releases" / "current").symlink_to("v2")
        (self.root / "state.txt").write_text("two\n")

    def head(self):
        return git(self.repo, "rev-parse", "HEAD")

    def link(self):
        return os.readlink(self.root / "releases" / "current")


@pytest.fixture
def basic(tmp_path):
    return Basic(tmp_path)


@pytest.fixture
def slow_basic(tmp_path):
    return Basic(tmp_path, slow=1.5)


def psql(url, *args, input=None):
    return subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-Atq", *args],
        input=input, check=True, capture_output=True, text=True,
    ).stdout.strip()


@pytest.fixture
def pg_db():
    """A fresh database on the real server, dropped afterwards."""
    name = f"rbpy_{uuid.uuid4().hex[:12]}"
    psql(f"{POSTGRES_URL}/postgres", "-c", f'create database "{name}"')
    yield f"{POSTGRES_URL}/{name}"
    psql(f"{POSTGRES_URL}/postgres", "-c", f'drop database if exists "{name}" with (force)')


def redis_cli(*args):
    return subprocess.run(
        ["redis-cli", "-u", REDIS_URL, *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def redis_prefix():
    """A key prefix of its own on the real server (db 0), its keys removed afterwards."""
    prefix = f"rbpy:{uuid.uuid4().hex[:12]}:"
    assert redis_cli("PING") == "PONG", "Redis is not answering on " + REDIS_URL
    yield prefix
    keys = redis_cli("--scan", "--pattern", prefix + "*").split()
    if keys:
        redis_cli("DEL", *keys)
