// stack.watch(): a heartbeat probe over a real file, the rollback it starts, its
// decisions through onEvent, a dry run, and an AbortSignal that stops it.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { Stack, RollbackError } from '../index.mjs'
import { scratch } from './helpers.mjs'

const TOML = `
[[component]]
name = "app"
driver = "files"
paths = ["app"]
# Snapshots taken while this passes are last-good, what a watch rolls back to. (Not
# the heartbeat: as a gate it would wait for a beat of the restored version.)
health = [{ command = ["true"] }]

[watch]
interval = "200ms"
window = 3
failure_limit = 2

[[watch.probe]]
name = "bot"
heartbeat = "heartbeat"
max_age = "1s"
`

async function setup(t) {
  const dir = scratch(t)
  mkdirSync(join(dir, 'app'))
  writeFileSync(join(dir, 'app/version'), 'v1\n')
  writeFileSync(join(dir, 'heartbeat'), '')
  writeFileSync(join(dir, 'rollback.toml'), TOML)
  const stack = await Stack.load(join(dir, 'rollback.toml'))
  const snap = await stack.snapshot({ label: 'good' })
  writeFileSync(join(dir, 'app/version'), 'v2\n')
  return { dir, stack, snap }
}

const stale = (dir) => {
  const old = Date.now() / 1000 - 60
  utimesSync(join(dir, 'heartbeat'), old, old)
}
const version = (dir) => readFileSync(join(dir, 'app/version'), 'utf8')

test('a heartbeat that stopped is rolled back; the decision reaches onEvent and the record', async (t) => {
  const { dir, stack, snap } = await setup(t)
  stale(dir)
  const events = []
  const r = await stack.watch({ durationMs: 30000, onEvent: (e) => events.push(e) })
  assert.equal(r.outcome, 'rolled_back')
  assert.equal(r.record.status, 'succeeded', r.record.error)
  assert.equal(r.record.snapshotId, snap.id)
  assert.equal(r.record.watch.probe, 'bot')
  assert.match(r.record.watch.reason, /^bot: no beat since the watch started .* ago \(high\) in 2 of the last [23] probes$/)
  assert.equal(version(dir), 'v1\n')
  const kinds = events.map((e) => e.kind)
  assert.equal(kinds[0], 'watch_started')
  assert.ok(kinds.includes('watch_decision') && kinds.includes('step_started'), kinds.join(','))
  // A watch's events name their probe in `probe`; `action` is a step's only.
  const decision = events.find((e) => e.kind === 'watch_decision')
  assert.deepEqual([decision.probe, decision.action, decision.status], ['bot', null, 'rollback'])
  const step = events.find((e) => e.kind === 'step_started')
  assert.equal(step.probe, null)
  assert.ok(['stop', 'restore', 'start', 'health_gate', 'verify'].includes(step.action), step.action)
})

test('a dry run decides and changes nothing', async (t) => {
  const { dir, stack } = await setup(t)
  stale(dir)
  const r = await stack.watch({ durationMs: 30000, dryRun: true })
  assert.equal(r.outcome, 'would_roll_back')
  assert.equal(r.record, null)
  assert.equal(r.decisions[0].dryRun, true)
  assert.equal(version(dir), 'v2\n')
  assert.deepEqual(await stack.history(), [])
})

test('an AbortSignal stops the watch cleanly', async (t) => {
  const { dir, stack } = await setup(t)
  const beat = setInterval(() => writeFileSync(join(dir, 'heartbeat'), ''), 100)
  t.after(() => clearInterval(beat))
  const ac = new AbortController()
  setTimeout(() => ac.abort(), 600)
  const r = await stack.watch({ signal: ac.signal })
  assert.equal(r.outcome, 'stopped')
  assert.ok(r.rounds >= 2, `${r.rounds} rounds`)
  assert.deepEqual(r.decisions, [])
  assert.equal(version(dir), 'v2\n')
})

test('bad input rejects with CONFIG before the watch starts', async (t) => {
  const { stack } = await setup(t)
  await assert.rejects(stack.watch({ durationMs: -1 }), (e) => e instanceof RollbackError && e.code === 'CONFIG')
  await assert.rejects(stack.watch({ snapshot: 'nope' }), (e) => e instanceof RollbackError && e.code === 'NOT_FOUND')
})
