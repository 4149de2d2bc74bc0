"""One stack of git, files, postgres and redis against the real servers of this
machine, through the Python API: snapshot, bad deploy, plan with discards,
rollback at each level, verify, record."""

import asyncio
import json

import rollback

from conftest import commit, make_repo, psql, redis_cli


def build(tmp_path, pg_url, prefix):
    make_repo(tmp_path / "repo")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "trading.toml").write_text("max_position = 10\n")
    psql(pg_url, input=(
        "create table orders (id serial primary key, symbol text not null, qty int not null);"
        "insert into orders (symbol, qty) values ('BTC', 1), ('ETH', 2);"
    ))
    redis_cli("SET", prefix + "price:BTC", "50000")
    redis_cli("SET", prefix + "session", "abc", "EX", "3600")
    toml = f"""
[[component]]
name = "code"
driver = "git"
phase = 1
repo = "repo"

[[component]]
name = "config"
driver = "files"
phase = 1
paths = ["conf"]

[[component]]
name = "db"
driver = "postgres"
phase = 2
url = "{pg_url}"

[[component]]
name = "cache"
driver = "redis"
phase = 3
url = "redis://127.0.0.1:6379/0"
pattern = "{prefix}*"
depends_on = ["db"]
"""
    (tmp_path / "rollback.toml").write_text(toml)
    return rollback.Stack.load(tmp_path / "rollback.toml")


def deploy_bad(tmp_path, pg_url, prefix):
    commit(tmp_path / "repo", "app.py", 'print("v2")\n', "v2")
    (tmp_path / "conf" / "trading.toml").write_text("max_position = 1000\n")
    psql(pg_url, input=(
        "insert into orders (symbol, qty) values ('DOGE', 999);"
        "update orders set qty = 7 where symbol = 'BTC';"
        "alter table orders add column note text;"
    ))
    redis_cli("SET", prefix + "price:BTC", "1")
    redis_cli("SET", prefix + "junk", "x")


def state(pg_url, prefix):
    rows = psql(pg_url, "-c", "select symbol || ':' || qty from orders order by id")
    cols = psql(pg_url, "-c", "select count(*) from information_schema.columns where table_name = 'orders'")
    keys = sorted(redis_cli("--scan", "--pattern", prefix + "*").split())
    return rows.split(), int(cols), keys, redis_cli("GET", prefix + "price:BTC")


def test_git_files_postgres_redis_in_one_stack(tmp_path, pg_db, redis_prefix):
    stack = build(tmp_path, pg_db, redis_prefix)
    good = state(pg_db, redis_prefix)
    snap = stack.snapshot(label="pre-deploy")
    assert snap.components == ["code", "config", "db", "cache"]
    assert stack.verify(snap)

    deploy_bad(tmp_path, pg_db, redis_prefix)
    v = stack.verify(snap)
    assert set(v.drift) == {"code", "config", "db", "cache"}

    # Component level: only the cache.
    plan = stack.plan(snap, level="component", components=["cache"])
    discards = {d["target"]: d for d in plan.discards}
    assert discards and all(d["component"] == "cache" for d in plan.discards)
    rec = stack.rollback(snap, level="component", components=["cache"], trigger="latency")
    assert rec.status == "succeeded" and rec.components == ["cache"]
    assert redis_cli("GET", redis_prefix + "price:BTC") == "50000"
    assert 0 < int(redis_cli("TTL", redis_prefix + "session")) <= 3600
    assert set(stack.verify(snap).drift) == {"code", "config", "db"}

    # Phase level: the database (and the cache depending on it is stopped/started if it could be).
    plan = stack.plan(snap, level="phase", phases=[2])
    text = str(plan)
    assert "db" in text and "orders" in json.dumps(plan.discards)
    rec = stack.rollback(snap, level="phase", phases=[2], trigger="data_corruption", severity="high")
    assert rec.status == "succeeded" and rec.level == "phase" and rec.phases == [2]
    assert rec.discarded and rec.data_loss is False and rec.safety_snapshot_id
    assert state(pg_db, redis_prefix) == good
    assert set(stack.verify(snap).drift) == {"code", "config"}

    # The discarded rows can be read back: roll the db forward to the safety snapshot.
    forward = stack.rollback(rec.safety_snapshot_id, components=["db"], safety_snapshot=False)
    assert forward.succeeded
    assert "DOGE:999" in state(pg_db, redis_prefix)[0]

    # Complete level: everything back.
    deploy_bad_cache = redis_cli("SET", redis_prefix + "junk", "again")
    assert deploy_bad_cache == "OK"
    rec = stack.rollback(snap, trigger="error_rate", severity="critical")
    assert rec.status == "succeeded" and rec.level == "complete"
    assert sorted(rec.components) == ["cache", "code", "config", "db"]
    assert all(x["ok"] for x in rec.verification.values())
    assert state(pg_db, redis_prefix) == good
    assert (tmp_path / "conf" / "trading.toml").read_text() == "max_position = 10\n"
    assert stack.verify(snap)
    doc = json.loads(rec.to_json())
    assert doc["severity"] == "critical" and doc["trigger"] == "error_rate"
    assert [r.rollback_id for r in stack.history()][-1] == rec.rollback_id


def test_database_and_cache_snapshotted_concurrently(tmp_path, pg_db, redis_prefix):
    stack = build(tmp_path, pg_db, redis_prefix)

    async def main():
        ticks = 0
        running = True

        async def ticker():
            nonlocal ticks
            while running:
                ticks += 1
                await asyncio.sleep(0.005)

        t = asyncio.create_task(ticker())
        db, cache = await asyncio.gather(
            stack.snapshot_async(components=["db"]), stack.snapshot_async(components=["cache"])
        )
        running = False
        await t
        return db, cache, ticks

    db, cache, ticks = asyncio.run(main())
    assert db.components == ["db"] and cache.components == ["cache"]
    assert ticks >= 2  # the loop ran other tasks while both captures were in flight
    assert stack.verify(db) and stack.verify(cache)


def test_unreachable_database_is_a_driver_error(tmp_path):
    stack = rollback.Stack.from_toml(
        '[[component]]\nname = "db"\ndriver = "postgres"\nurl = "postgres://postgres:s3cret@127.0.0.1:1/x"\n',
        tmp_path,
    )
    try:
        stack.snapshot()
    except rollback.DriverError as e:
        assert e.component == "db"
        assert "s3cret" not in str(e)
    else:
        raise AssertionError("no error")
