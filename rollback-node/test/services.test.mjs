// One stack of git, files, postgres, redis and pm2 components on the real services
// (PostgreSQL and Redis on 127.0.0.1: scripts/services.sh; pm2: scripts/setup-pm2.sh),
// driven through the Node API. Settings: ROLLBACK_POSTGRES_URL (a server URL; the test
// makes its own database), ROLLBACK_REDIS_URL, ROLLBACK_PM2_BIN. A missing service
// fails the test.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { Stack } from '../index.mjs'
import { commit, git, makeRepo, scratch, sh } from './helpers.mjs'

const PG = process.env.ROLLBACK_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const REDIS = process.env.ROLLBACK_REDIS_URL ?? 'redis://127.0.0.1:6379/0'
// scripts/setup-pm2.sh installs pm2 into the repository's target/tools.
const repoPm2 = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'target', 'tools', 'pm2', 'node_modules', '.bin', 'pm2')
const PM2 = process.env.ROLLBACK_PM2_BIN ?? (existsSync(repoPm2) ? repoPm2 : 'pm2')

const pgUrl = (db) => {
  const u = new URL(PG)
  u.pathname = `/${db}`
  return u.toString()
}
const psql = (db, sql) => sh('/', 'psql', pgUrl(db), '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-Atc', sql)
const redis = (...args) => {
  const u = new URL(REDIS)
  return sh('/', 'redis-cli', '-h', u.hostname, '-p', u.port || '6379', '-n', u.pathname.slice(1) || '0', '--raw', ...args)
}

/** A pm2 app (fork mode, no port) in a releases dir with v1 and v2, running v1. */
function pm2App(dir, app) {
  const home = join(dir, 'pm2home')
  mkdirSync(home)
  const pm2 = (...args) =>
    execFileSync(PM2, args, { cwd: dir, encoding: 'utf8', env: { ...process.env, PM2_HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] })
  for (const v of ['1.0.0', '2.0.0']) {
    const rel = join(dir, 'releases', `v${v[0]}`)
    mkdirSync(rel, { recursive: true })
    writeFileSync(join(rel, 'package.json'), JSON.stringify({ name: app, version: v }))
    writeFileSync(join(rel, 'server.js'), `setInterval(() => {}, 1000)\n`)
  }
  symlinkSync('v1', join(dir, 'releases', 'current'))
  writeFileSync(
    join(dir, 'ecosystem.config.js'),
    `module.exports = { apps: [{ name: ${JSON.stringify(app)}, script: 'server.js', cwd: ${JSON.stringify(join(dir, 'releases', 'current'))}, exec_mode: 'fork', instances: 1, autorestart: true }] }\n`,
  )
  pm2('start', 'ecosystem.config.js')
  const proc = () => JSON.parse(pm2('jlist')).filter((p) => p.name === app)
  const deploy = (v) => {
    symlinkSync(v, join(dir, 'releases', 'next'))
    renameSync(join(dir, 'releases', 'next'), join(dir, 'releases', 'current'))
    pm2('startOrReload', 'ecosystem.config.js', '--update-env')
  }
  const version = async () => {
    // Reload is asynchronous in pm2: wait for the process to be online again.
    for (let i = 0; i < 100; i++) {
      const p = proc()
      if (p.length === 1 && p[0].pm2_env.status === 'online') return p[0].pm2_env.version
      await new Promise((r) => setTimeout(r, 100))
    }
    return `not online: ${JSON.stringify(proc().map((p) => p.pm2_env.status))}`
  }
  return { home, deploy, version, kill: () => pm2('kill') }
}

test('git, files, postgres, redis and pm2 in one stack: snapshot, break, roll back at each level, verify', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rollback-node-'))
  const id = randomBytes(4).toString('hex')
  const db = `rbnode_${id}`
  const prefix = `rbnode:${id}:`
  const app = `rbnode-${id}`
  // The daemon goes before its PM2_HOME does (else `pm2 kill` would start a new one).
  let api
  t.after(() => {
    try {
      api?.kill()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
  api = pm2App(dir, app)
  assert.equal(await api.version(), '1.0.0')

  makeRepo(join(dir, 'repo'))
  writeFileSync(join(dir, 'settings.json'), '{"risk": "low"}\n')
  psql('postgres', `create database ${db}`)
  t.after(() => psql('postgres', `drop database if exists ${db} with (force)`))
  psql(db, "create table orders (id serial primary key, symbol text not null, qty int not null); insert into orders (symbol, qty) values ('AAPL', 10), ('MSFT', 5)")
  redis('set', `${prefix}price:AAPL`, '189.5')
  redis('hset', `${prefix}book`, 'bid', '189.4', 'ask', '189.6')
  redis('set', `${prefix}session`, 'abc', 'PX', '3600000')
  t.after(() => {
    const keys = redis('--scan', '--pattern', `${prefix}*`).split('\n').filter(Boolean)
    if (keys.length) redis('del', ...keys)
  })

  const stack = Stack.fromConfig(
    {
      component: [
        { name: 'code', driver: 'git', phase: 1, repo: 'repo' },
        { name: 'config', driver: 'files', phase: 1, paths: ['settings.json'] },
        { name: 'db', driver: 'postgres', phase: 2, url: pgUrl(db) },
        { name: 'cache', driver: 'redis', phase: 3, url: REDIS, pattern: `${prefix}*` },
        {
          name: 'api',
          driver: 'pm2',
          phase: 3,
          depends_on: ['db'],
          app,
          ecosystem: 'ecosystem.config.js',
          releases: 'releases',
          pm2_home: api.home,
          pm2_bin: PM2,
        },
      ],
    },
    dir,
  )
  const check = await stack.check()
  assert.equal(check.ok, true, JSON.stringify(check.components))

  const snap = await stack.snapshot({ label: 'pre-deploy' })
  assert.deepEqual(snap.components, ['code', 'config', 'db', 'api', 'cache'])
  assert.equal((await stack.verify(snap.id)).ok, true)

  let deploys = 0
  const breakAll = () => {
    deploys++
    commit(join(dir, 'repo'), 'app.js', `console.log("v${deploys + 1}")\n`, `v${deploys + 1}`)
    writeFileSync(join(dir, 'settings.json'), '{"risk": "yolo"}\n')
    psql(db, "insert into orders (symbol, qty) values ('TSLA', 99); update orders set qty = 0 where symbol = 'AAPL'")
    redis('set', `${prefix}price:AAPL`, '0')
    redis('set', `${prefix}junk`, 'x')
    api.deploy('v2')
  }
  const dbRows = () => psql(db, 'select symbol || \':\' || qty from orders order by id').split('\n')

  // Component level: only the cache.
  breakAll()
  assert.equal(await api.version(), '2.0.0')
  const drift = await stack.verify(snap.id)
  assert.deepEqual(drift.drift.map((d) => d.component).sort(), ['api', 'cache', 'code', 'config', 'db'])
  const plan = await stack.plan(snap.id, { level: 'component', components: ['cache'] })
  assert.deepEqual(plan.components, ['cache'])
  let rec = await stack.rollback(snap.id, { level: 'component', components: ['cache'], trigger: 'latency' })
  assert.equal(rec.status, 'succeeded', rec.error)
  assert.equal(redis('get', `${prefix}price:AAPL`), '189.5')
  assert.equal(redis('exists', `${prefix}junk`), '0')
  assert.ok(Number(redis('pttl', `${prefix}session`)) > 0, 'TTL kept')
  assert.deepEqual(dbRows(), ['AAPL:0', 'MSFT:5', 'TSLA:99'], 'db untouched at component level')

  // Phase level: phase 2 is the database; the api depends on it, so it is stopped
  // around the restore and started again (still on v2: it is not in the scope).
  const dbPlan = await stack.plan(snap.id, { level: 'phase', phases: [2] })
  assert.ok(dbPlan.discards.some((d) => d.component === 'db'), dbPlan.text)
  assert.deepEqual(
    dbPlan.steps.filter((s) => s.component === 'api').map((s) => s.action),
    ['stop', 'start'],
    dbPlan.text,
  )
  rec = await stack.rollback(snap.id, { level: 'phase', phases: [2], trigger: 'error_rate', severity: 'high' })
  assert.equal(rec.status, 'succeeded', rec.error)
  assert.deepEqual(rec.steps.filter((s) => s.component === 'api').map((s) => s.action), ['stop', 'start'])
  assert.equal(await api.version(), '2.0.0')
  assert.deepEqual(dbRows(), ['AAPL:10', 'MSFT:5'])
  assert.ok(rec.discarded.some((d) => d.component === 'db'))
  assert.equal(rec.dataLoss, false, 'the safety snapshot keeps what was discarded')
  assert.equal(readFileSync(join(dir, 'settings.json'), 'utf8'), '{"risk": "yolo"}\n', 'phase 1 untouched')

  // Complete: everything, after breaking everything again.
  breakAll()
  const events = []
  rec = await stack.rollback(snap.id, { level: 'complete', onEvent: (e) => events.push(e) })
  assert.equal(rec.status, 'succeeded', rec.error)
  assert.deepEqual([...rec.components].sort(), ['api', 'cache', 'code', 'config', 'db'])
  assert.ok(Object.values(rec.verification).every((v) => v.ok))
  assert.ok(events.filter((e) => e.kind === 'step_finished').length >= 10)
  assert.equal(git(join(dir, 'repo'), 'log', '-1', '--format=%s'), 'v1')
  assert.equal(readFileSync(join(dir, 'settings.json'), 'utf8'), '{"risk": "low"}\n')
  assert.deepEqual(dbRows(), ['AAPL:10', 'MSFT:5'])
  assert.equal(redis('get', `${prefix}price:AAPL`), '189.5')
  assert.equal(await api.version(), '1.0.0')
  assert.deepEqual(await stack.verify(snap.id).then((v) => [v.ok, v.drift]), [true, []])
  assert.equal((await stack.history()).length, 3)
})

test('an unreachable database is a DRIVER error naming the component, and no secret leaks', async (t) => {
  const dir = scratch(t)
  process.env.RBNODE_TEST_PW = 'hunter2-secret'
  const stack = Stack.fromToml(
    '[[component]]\nname = "db"\ndriver = "postgres"\nurl = "postgres://postgres:${RBNODE_TEST_PW}@127.0.0.1:1/nothing"\n',
    dir,
  )
  await assert.rejects(stack.snapshot(), (e) => {
    assert.equal(e.code, 'DRIVER', e.message)
    assert.equal(e.component, 'db')
    assert.ok(!e.message.includes('hunter2'), e.message)
    assert.ok(!e.stack.includes('hunter2'))
    return true
  })
})
