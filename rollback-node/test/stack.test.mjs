// The Node API against a real stack of git, files, releases and command components.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { Stack, assess, RollbackError, AbortError, isRollbackError } from '../index.mjs'
import { basicStack, deployBad, git, scratch } from './helpers.mjs'

const read = (dir, f) => readFileSync(join(dir, f), 'utf8')

async function setup(t, opts) {
  const { dir, toml } = basicStack(scratch(t), opts)
  const stack = await Stack.load(join(dir, 'rollback.toml'))
  return { dir, toml, stack }
}

async function rejectsWith(promise, code, component) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof Error, 'an Error')
    assert.ok(e instanceof RollbackError, 'a RollbackError')
    assert.equal(e.code, code, e.message)
    if (component !== undefined) assert.equal(e.component, component)
    return true
  })
}

test('assess applies the decision matrix synchronously', () => {
  const a = assess({ errorRate: 0.31, perfDegradation: 0.55, dataImpact: 'none' })
  assert.deepEqual(a, {
    severity: 'high',
    decision: 'rollback',
    rollBack: true,
    reasons: ['error rate 31.0%', 'performance degradation 55.0%'],
  })
  assert.equal(assess({ errorRate: 0.6, perfDegradation: 0 }).decision, 'immediate_rollback')
  assert.equal(assess({ errorRate: 0.12, perfDegradation: 0 }).severity, 'medium')
  assert.equal(assess({ errorRate: 0.01, perfDegradation: 0.1 }).decision, 'fix_forward')
  assert.equal(assess({ errorRate: 0, perfDegradation: 0, security: true }).severity, 'critical')
  assert.equal(assess({ errorRate: 0, perfDegradation: 0, latencyMs: 900 }).severity, 'high')
  assert.equal(assess({ errorRate: 0, perfDegradation: 0, dataImpact: 'loss' }).severity, 'critical')
  assert.throws(() => assess({ errorRate: 0, perfDegradation: 0, dataImpact: 'meh' }), (e) => e.code === 'CONFIG')
  assert.throws(() => assess({ errorRate: 'high', perfDegradation: 0 }), (e) => e.code === 'CONFIG')
  // A monitor that divided by zero requests must hear an error, not "fix forward".
  for (const bad of [{ errorRate: NaN, perfDegradation: 0 }, { errorRate: -0.1, perfDegradation: 0 },
    { errorRate: 0, perfDegradation: Infinity }, { errorRate: 0, perfDegradation: 0, latencyMs: NaN }]) {
    assert.throws(() => assess(bad), (e) => e.code === 'CONFIG', JSON.stringify(bad))
  }
})

test('a stack uses its own [decision] thresholds', (t) => {
  const dir = scratch(t)
  const stack = Stack.fromToml('[decision]\nerror_rate_medium = 0.01\nerror_rate_high = 0.02\nerror_rate_critical = 0.03\n', dir)
  assert.equal(stack.assess({ errorRate: 0.025, perfDegradation: 0 }).severity, 'high')
  assert.equal(assess({ errorRate: 0.025, perfDegradation: 0 }).severity, 'low')
})

test('stacks load from a file, from TOML text and from an object', async (t) => {
  const { dir, toml, stack } = await setup(t)
  assert.ok(stack instanceof Stack)
  assert.deepEqual(stack.components.map((c) => [c.name, c.driver, c.phase]), [
    ['code', 'git', 1],
    ['config', 'files', 2],
    ['release', 'releases', 2],
    ['worker', 'command', 3],
  ])
  assert.equal(stack.storePath, join(dir, '.rollback'))
  const fromText = Stack.fromToml(toml, dir)
  assert.ok(fromText instanceof Stack)
  assert.equal(fromText.components.length, 4)
  const fromObject = Stack.fromConfig(
    {
      store: { path: 'store2' },
      rto: { complete: '1m' },
      component: [
        { name: 'code', driver: 'git', repo: 'repo' },
        { name: 'config', driver: 'files', phase: 2, paths: ['conf'], depends_on: ['code'], health: [{ command: ['true'] }] },
      ],
    },
    dir,
  )
  assert.deepEqual(fromObject.components[1], { name: 'config', driver: 'files', phase: 2, dependsOn: ['code'] })
  assert.equal(fromObject.storePath, join(dir, 'store2'))
  const snap = await fromObject.snapshot({ label: 'object-built' })
  assert.deepEqual(snap.components, ['code', 'config'])
  assert.equal(snap.healthy, true)
  assert.deepEqual(snap.health.config, [{ check: 'command true', ok: true, detail: 'exit 0' }])
  assert.equal((await fromObject.show('last-good')).id, snap.id)
})

test('bad input and missing things reject with codes', async (t) => {
  const { dir, stack } = await setup(t)
  await rejectsWith(Stack.load(join(dir, 'missing.toml')), 'CONFIG')
  assert.throws(() => Stack.fromToml('[[component]]\nname = "x"\ndriver = "nope"\n', dir), (e) => {
    assert.ok(isRollbackError(e))
    assert.equal(e.code, 'CONFIG')
    assert.equal(e.component, 'x')
    return true
  })
  assert.throws(() => Stack.fromToml('[[component]]\nname = "c"\ndriver = "git"\nrepo = "repo"\nbogus = 1\n', dir), (e) => {
    assert.equal(e.code, 'CONFIG')
    assert.match(e.message, /bogus/)
    return true
  })
  await rejectsWith(stack.plan('20000101T000000000Z-000000'), 'NOT_FOUND')
  await rejectsWith(stack.verify('no-such-snapshot'), 'NOT_FOUND')
  await rejectsWith(stack.record('no-such-record'), 'NOT_FOUND')
  const snap = await stack.snapshot()
  await rejectsWith(stack.plan(snap.id, { level: 'sideways' }), 'CONFIG')
  await rejectsWith(stack.rollback(snap.id, { level: 'phase' }), 'CONFIG')
  await rejectsWith(stack.snapshot({ components: ['nope'] }), 'NOT_FOUND')
  await rejectsWith(stack.gc({ maxAge: 'forever' }), 'CONFIG')
  await rejectsWith(stack.report('latest', 'pdf'), 'CONFIG')
  // Huge numbers are CONFIG errors, never "Panic in async function" without a code.
  await rejectsWith(stack.rollback(snap.id, { stepTimeoutMs: 1e300 }), 'CONFIG')
  await rejectsWith(stack.gc({ maxAge: '1e300' }), 'CONFIG')
  // A severity outside the four is refused, naming it, before anything runs.
  await assert.rejects(stack.rollback(snap.id, { severity: 'urgent' }), (e) => {
    assert.equal(e.code, 'CONFIG')
    assert.match(e.message, /severity `urgent` is not one of low, medium, high, critical/)
    return true
  })
  assert.deepEqual(await stack.history(), [])
  // The stack of the rejection points at the caller, not at the binding.
  await assert.rejects(stack.verify('no-such-snapshot'), (e) => e.stack.includes('stack.test.mjs'))
})

// napi alone truncated numbers (`phases: [1.9]` planned phase 1, `[NaN]` phase 0),
// read a non-object as no options, ignored unknown keys, and threw plain TypeErrors
// naming nothing. Every such argument is refused before anything runs.
test('bad arguments are CONFIG errors naming the argument, and change nothing', async (t) => {
  const { dir, stack } = await setup(t)
  const snap = await stack.snapshot()
  deployBad(dir)
  const refused = (what, pattern) => (e) => {
    assert.ok(e instanceof RollbackError, `${what}: a RollbackError, not ${e && e.constructor.name}: ${e && e.message}`)
    assert.equal(e.code, 'CONFIG', `${what}: ${e.message}`)
    assert.match(e.message, pattern, what)
    return true
  }
  const rejected = [
    ['plan phases [1.9]', () => stack.plan(snap.id, { phases: [1.9] }), /`options\.phases\[0\]` = 1\.9 is not a whole number/],
    ['plan phases [NaN]', () => stack.plan(snap.id, { phases: [NaN] }), /`options\.phases\[0\]` = NaN/],
    ['plan phases [2**70]', () => stack.plan(snap.id, { phases: [2 ** 70] }), /`options\.phases\[0\]`/],
    ['plan phases [true]', () => stack.plan(snap.id, { phases: [true] }), /`options\.phases\[0\]` must be a whole number, not true/],
    ['plan phases "1"', () => stack.plan(snap.id, { phases: '1' }), /`options\.phases` must be an array/],
    ['plan options 5', () => stack.plan(snap.id, 5), /`options` must be an object, not the number 5/],
    ['plan unknown key', () => stack.plan(snap.id, { phase: [2] }), /`options` has an unknown key `phase`/],
    ['plan snapshot null', () => stack.plan(null), /`snapshot` must be a string, not null/],
    ['dryRun phases [0.5]', () => stack.dryRun(snap.id, { phases: [0.5] }), /`options\.phases\[0\]`/],
    ['rollback phases [2.5]', () => stack.rollback(snap.id, { phases: [2.5] }), /`options\.phases\[0\]` = 2\.5/],
    ['rollback typo of components', () => stack.rollback(snap.id, { component: ['code'] }), /unknown key `component`/],
    ['rollback safetySnapshot 0', () => stack.rollback(snap.id, { safetySnapshot: 0 }), /`options\.safetySnapshot` must be true or false/],
    ['rollback stepTimeoutMs NaN', () => stack.rollback(snap.id, { stepTimeoutMs: NaN }), /`options\.stepTimeoutMs`/],
    ['rollback stepTimeoutMs true', () => stack.rollback(snap.id, { stepTimeoutMs: true }), /`options\.stepTimeoutMs` must be a number/],
    ['rollback components [1]', () => stack.rollback(snap.id, { components: [1] }), /`options\.components\[0\]` must be a string/],
    ['rollback onEvent 5', () => stack.rollback(snap.id, { onEvent: 5 }), /`options\.onEvent` must be a function/],
    ['rollback signal {}', () => stack.rollback(snap.id, { signal: {} }), /`options\.signal` must be an AbortSignal/],
    ['drill safetySnapshot "no"', () => stack.drill({ safetySnapshot: 'no' }), /`options\.safetySnapshot`/],
    ['resume id 5', () => stack.resume(5), /`rollbackId` must be a string/],
    ['resume onEvent "x"', () => stack.resume('latest', { onEvent: 'x' }), /`options\.onEvent`/],
    ['watch durationMs true', () => stack.watch({ durationMs: true }), /`options\.durationMs` must be a number, not true/],
    ['watch dryRun 1', () => stack.watch({ dryRun: 1 }), /`options\.dryRun` must be true or false/],
    ['verify throwOnDrift 1', () => stack.verify(snap.id, { throwOnDrift: 1 }), /`options\.throwOnDrift`/],
    ['snapshot label 5', () => stack.snapshot({ label: 5 }), /`options\.label` must be a string/],
    ['snapshot components "code"', () => stack.snapshot({ components: 'code' }), /`options\.components` must be an array of strings/],
    ['gc keep -1', () => stack.gc({ keep: -1 }), /`options\.keep` = -1 is not a whole number from 1/],
    ['gc keep 1.5', () => stack.gc({ keep: 1.5 }), /`options\.keep` = 1\.5/],
    ['gc keep NaN', () => stack.gc({ keep: NaN }), /`options\.keep` = NaN/],
    ['gc keep 2**70', () => stack.gc({ keep: 2 ** 70 }), /`options\.keep`/],
    ['gc keep true', () => stack.gc({ keep: true }), /`options\.keep` must be a whole number from 1, not true/],
    ['gc maxAge 5', () => stack.gc({ maxAge: 5 }), /`options\.maxAge` must be a string/],
    ['health components null-ish string', () => stack.health({ components: 'code' }), /`options\.components`/],
    ['show 5', () => stack.show(5), /`snapshot` must be a string/],
    ['record null', () => stack.record(null), /`reference` must be a string/],
    ['report format 5', () => stack.report('latest', 5), /`format` must be a string/],
    ['load 5', () => Stack.load(5), /`path` must be a string/],
  ]
  for (const [what, call, pattern] of rejected) await assert.rejects(call(), refused(what, pattern))

  const thrown = [
    ['assess(null)', () => assess(null), /`symptoms` must be an object, not null/],
    ['assess()', () => assess(), /`symptoms` must be an object, not undefined/],
    ['assess without perfDegradation', () => assess({ errorRate: 0.1 }), /`symptoms\.perfDegradation` must be a number, not undefined/],
    ['assess security 1', () => assess({ errorRate: 0, perfDegradation: 0, security: 1 }), /`symptoms\.security` must be true or false/],
    ['assess typo', () => assess({ errorRate: 0, perfDegradation: 0, latency: 900 }), /unknown key `latency`/],
    ['stack.assess(null)', () => stack.assess(null), /`symptoms` must be an object/],
    ['fromToml(null)', () => Stack.fromToml(null), /`text` must be a string, not null/],
    ['fromToml baseDir 5', () => Stack.fromToml('', 5), /`baseDir` must be a string/],
    ['fromConfig(null)', () => Stack.fromConfig(null, dir), /`config` must be an object, not null/],
    ['fromConfig phase NaN', () => Stack.fromConfig({ component: [{ name: 'x', driver: 'files', paths: ['conf'], phase: NaN }] }, dir),
      /`config\.component\[0\]\.phase` = NaN is not a finite number/],
    ['fromConfig a function', () => Stack.fromConfig({ component: [{ name: 'x', driver: 'files', paths: [() => 1] }] }, dir),
      /`config\.component\[0\]\.paths\[0\]` is a function/],
  ]
  for (const [what, call, pattern] of thrown) assert.throws(call, refused(what, pattern))
  const cyclic = { component: [] }
  cyclic.store = { again: cyclic }
  assert.throws(() => Stack.fromConfig(cyclic, dir), refused('a cyclic config', /nests deeper/))

  // Nothing ran: no record, no snapshot besides the first, the bad deploy in place.
  assert.deepEqual(await stack.history(), [])
  assert.deepEqual((await stack.list()).map((s) => s.id), [snap.id])
  assert.equal(read(dir, 'conf/app.toml'), 'mode = "broken"\n')
  assert.equal(read(dir, 'state.txt'), 'two\n')

  // `undefined` and `null` leave an option unset, as they do for the whole options object.
  assert.deepEqual((await stack.plan(snap.id, { phases: null, components: undefined, level: null })).level, 'complete')
  assert.deepEqual((await stack.plan(snap.id, { phases: [2], extra: undefined })).phases, [2])
})

test('a driver failure names its component', async (t) => {
  const dir = scratch(t)
  const stack = Stack.fromToml('[[component]]\nname = "api"\ndriver = "command"\ncapture = ["false"]\nrestore = ["true"]\n', dir)
  await rejectsWith(stack.snapshot(), 'DRIVER', 'api')
  const gone = Stack.fromToml('[[component]]\nname = "code"\ndriver = "git"\nrepo = "no-repo-here"\n', dir)
  await assert.rejects(gone.snapshot(), (e) => e instanceof RollbackError && e.component === 'code' && typeof e.code === 'string')
})

test('snapshot, list, show, plan', async (t) => {
  const { dir, stack } = await setup(t)
  const snap = await stack.snapshot({ label: 'v1.2.0' })
  assert.match(snap.id, /^\d{8}T\d{9}Z-[0-9a-f]{6}$/)
  assert.equal(snap.label, 'v1.2.0')
  assert.ok(!Number.isNaN(Date.parse(snap.createdAt)))
  assert.deepEqual(snap.components, ['code', 'config', 'release', 'worker'])
  assert.equal(snap.safetyFor, null)
  const code = snap.parts.find((p) => p.component === 'code')
  assert.equal(code.driver, 'git')
  assert.equal(code.state.commit, git(join(dir, 'repo'), 'rev-parse', 'HEAD'))
  assert.equal(code.state.branch, 'main')
  const only = await stack.snapshot({ components: ['config'] })
  assert.deepEqual(only.components, ['config'])
  const list = await stack.list()
  assert.deepEqual(list.map((s) => s.id), [snap.id, only.id])
  assert.equal((await stack.show('latest')).id, only.id)
  assert.equal((await stack.show(snap.id)).label, 'v1.2.0')

  deployBad(dir)
  const plan = await stack.plan(snap.id, { level: 'complete' })
  assert.equal(plan.snapshotId, snap.id)
  assert.equal(plan.level, 'complete')
  assert.deepEqual([...plan.components].sort(), ['code', 'config', 'release', 'worker'])
  assert.ok(plan.steps.some((s) => s.component === 'code' && s.action === 'restore'))
  assert.ok(plan.steps.some((s) => s.action === 'verify'))
  assert.ok(plan.steps.every((s) => typeof s.predictedMs === 'number' && typeof s.description === 'string'))
  assert.ok(plan.discards.some((d) => d.component === 'code' && d.changes === 1))
  assert.match(plan.text, /^Plan: complete rollback to snapshot/)
  const phase = await stack.plan(snap.id, { level: 'phase', phases: [2] })
  assert.deepEqual([...phase.components].sort(), ['config', 'release'])
  const comp = await stack.plan(snap.id, { components: ['code'] })
  assert.equal(comp.level, 'component')
  assert.deepEqual(comp.components, ['code'])
  const dry = await stack.dryRun(snap.id, { components: ['release'] })
  assert.deepEqual(dry.components, ['release'])
  // Planning changed nothing.
  assert.equal(read(dir, 'conf/app.toml'), 'mode = "broken"\n')
  assert.equal(readlinkSync(join(dir, 'releases', 'current')), 'v2')
  // Preflight refuses a release directory that is gone, before anything changes.
  rmSync(join(dir, 'releases', 'v1'), { recursive: true })
  await assert.rejects(stack.dryRun(snap.id), (e) => e instanceof RollbackError && e.component === 'release')
  await assert.rejects(stack.rollback(snap.id), (e) => e instanceof RollbackError && e.component === 'release')
  assert.equal(read(dir, 'conf/app.toml'), 'mode = "broken"\n')
})

test('complete rollback restores everything and returns a camelCase record', async (t) => {
  const { dir, stack } = await setup(t)
  const head = git(join(dir, 'repo'), 'rev-parse', 'HEAD')
  const snap = await stack.snapshot({ label: 'good' })
  deployBad(dir)
  const drift = await stack.verify(snap.id)
  assert.equal(drift.ok, false)
  assert.deepEqual(drift.drift.map((d) => d.component).sort(), ['code', 'config', 'release', 'worker'])
  assert.ok(drift.drift.every((d) => d.differences.length > 0))
  assert.equal(drift.components.code.ok, false)

  const record = await stack.rollback(snap.id, { level: 'complete', trigger: 'error_rate', severity: 'high' })
  assert.equal(record.status, 'succeeded', record.error)
  assert.equal(git(join(dir, 'repo'), 'rev-parse', 'HEAD'), head)
  assert.equal(read(dir, 'conf/app.toml'), 'mode = "live"\n')
  assert.equal(readlinkSync(join(dir, 'releases', 'current')), 'v1')
  assert.equal(read(dir, 'state.txt'), 'one\n')

  assert.deepEqual(Object.keys(record).sort(), [
    'completionTime', 'components', 'dataLoss', 'discarded', 'durationMs', 'error', 'kind', 'level', 'notes',
    'phases', 'resumed', 'rollbackId', 'rtoMet', 'rtoTargetMs', 'safetySnapshotId', 'severity', 'snapshotId',
    'startTime', 'status', 'steps', 'trigger', 'verification', 'watch',
  ])
  assert.equal(record.snapshotId, snap.id)
  assert.equal(record.kind, 'rollback')
  assert.equal(record.level, 'complete')
  assert.deepEqual(record.phases, [1, 2, 3])
  assert.equal(record.trigger, 'error_rate')
  assert.equal(record.severity, 'high')
  assert.equal(record.rtoTargetMs, 300000)
  assert.equal(record.rtoMet, record.durationMs <= record.rtoTargetMs)
  assert.ok(Date.parse(record.completionTime) >= Date.parse(record.startTime))
  assert.equal(record.dataLoss, false)
  assert.equal(typeof record.safetySnapshotId, 'string')
  assert.equal(record.error, null)
  assert.equal(record.resumed, false)
  for (const s of record.steps) {
    assert.deepEqual(Object.keys(s).sort(), ['action', 'component', 'durationMs', 'error', 'status'])
    assert.equal(s.status, 'ok')
  }
  assert.deepEqual(Object.keys(record.verification).sort(), ['code', 'config', 'release', 'worker'])
  assert.ok(Object.values(record.verification).every((v) => v.ok === true))
  assert.ok(record.discarded.some((d) => d.component === 'code' && d.keptInSafetySnapshot === true))
  assert.equal(JSON.parse(JSON.stringify(record)).rollbackId, record.rollbackId)

  const v = await stack.verify(snap.id)
  assert.deepEqual({ ok: v.ok, drift: v.drift }, { ok: true, drift: [] })
  // The safety snapshot can undo the rollback.
  const safety = await stack.show(record.safetySnapshotId)
  assert.equal(safety.safetyFor, record.rollbackId)

  const history = await stack.history()
  assert.deepEqual(history.map((r) => r.rollbackId), [record.rollbackId])
  assert.deepEqual(await stack.record(record.rollbackId), record)
  assert.match(await stack.report(record.rollbackId), /^# Rollback /)
  assert.equal(JSON.parse(await stack.report('latest', 'json')).rollback_id, record.rollbackId)
})

test('phase rollback restores only the components of the phase', async (t) => {
  const { dir, stack } = await setup(t)
  const snap = await stack.snapshot()
  deployBad(dir)
  const record = await stack.rollback(snap.id, { level: 'phase', phases: [2], safetySnapshot: false })
  assert.equal(record.status, 'succeeded', record.error)
  assert.equal(record.level, 'phase')
  assert.deepEqual(record.phases, [2])
  assert.deepEqual([...record.components].sort(), ['config', 'release'])
  assert.equal(record.safetySnapshotId, null)
  assert.equal(read(dir, 'conf/app.toml'), 'mode = "live"\n')
  assert.equal(readlinkSync(join(dir, 'releases', 'current')), 'v1')
  assert.equal(read(dir, 'state.txt'), 'two\n', 'phase 3 untouched')
  const v = await stack.verify(snap.id)
  assert.deepEqual(v.drift.map((d) => d.component).sort(), ['code', 'worker'])
  assert.equal((await stack.verify(snap.id, { components: ['config', 'release'] })).ok, true)
})

test('component rollback restores only the named components', async (t) => {
  const { dir, stack } = await setup(t)
  const snap = await stack.snapshot()
  deployBad(dir)
  const record = await stack.rollback(snap.id, { level: 'component', components: ['config'] })
  assert.equal(record.status, 'succeeded', record.error)
  assert.equal(record.level, 'component')
  assert.deepEqual(record.components, ['config'])
  assert.equal(read(dir, 'conf/app.toml'), 'mode = "live"\n')
  assert.equal(readlinkSync(join(dir, 'releases', 'current')), 'v2', 'other components untouched')
  assert.equal(record.rtoTargetMs, 30 * 60 * 1000)
})

test('a failed verify step gives a failed record; throwOnDrift rejects with VERIFICATION', async (t) => {
  const dir = scratch(t)
  writeFileSync(join(dir, 'state.txt'), 'one\n')
  // Restore "succeeds" without writing anything back, so verification fails.
  const stack = Stack.fromToml('[[component]]\nname = "svc"\ndriver = "command"\ncapture = ["cat", "state.txt"]\nrestore = ["true"]\n', dir)
  const snap = await stack.snapshot()
  writeFileSync(join(dir, 'state.txt'), 'two\n')
  const record = await stack.rollback(snap.id, { safetySnapshot: false })
  assert.equal(record.status, 'failed')
  assert.match(record.error, /differs/)
  assert.equal(record.verification.svc.ok, false)
  await rejectsWith(stack.verify(snap.id, { throwOnDrift: true }), 'VERIFICATION', 'svc')
})

test('onEvent receives step events as they happen', async (t) => {
  const { dir, stack } = await setup(t)
  const snapEvents = []
  const snap = await stack.snapshot({ onEvent: (e) => snapEvents.push(e) })
  assert.deepEqual(snapEvents.filter((e) => e.kind === 'part_captured').map((e) => e.component).sort(), ['code', 'config', 'release', 'worker'])
  deployBad(dir)
  const events = []
  const record = await stack.rollback(snap.id, { onEvent: (e) => events.push(e) })
  assert.equal(record.status, 'succeeded', record.error)
  const started = events.filter((e) => e.kind === 'step_started')
  const finished = events.filter((e) => e.kind === 'step_finished')
  assert.equal(started.length, record.steps.length)
  assert.equal(finished.length, record.steps.length)
  for (const e of finished) {
    assert.equal(typeof e.durationMs, 'number')
    assert.equal(e.status, 'ok')
    assert.equal(e.total, record.steps.length)
  }
  assert.deepEqual(started.map((e) => e.index), [...started.keys()])
  assert.deepEqual(started.map((e) => `${e.component}/${e.action}`), record.steps.map((s) => `${s.component}/${s.action}`))
})

test('a throwing onEvent becomes a warning and the rollback goes on', async (t) => {
  const { dir, stack } = await setup(t)
  const snap = await stack.snapshot()
  deployBad(dir)
  const warnings = []
  const onWarning = (w) => w.name === 'RollbackWarning' && warnings.push(w.message)
  process.on('warning', onWarning)
  t.after(() => process.off('warning', onWarning))
  const record = await stack.rollback(snap.id, {
    onEvent: (e) => {
      if (e.kind === 'step_started') throw new Error('callback bug')
    },
  })
  assert.equal(record.status, 'succeeded', record.error)
  await new Promise((r) => setImmediate(r))
  assert.ok(warnings.length > 0 && warnings.every((w) => w.includes('callback bug')), String(warnings))
})

test('the event loop keeps running during a long rollback', async (t) => {
  const { dir, stack } = await setup(t, { slowMs: 1500 })
  const snap = await stack.snapshot()
  deployBad(dir)
  let ticks = 0
  const timer = setInterval(() => ticks++, 25)
  let during = -1
  const record = await stack.rollback(snap.id, {
    onEvent: (e) => {
      if (e.kind === 'step_finished' && e.component === 'worker') during = ticks
    },
  })
  clearInterval(timer)
  assert.equal(record.status, 'succeeded', record.error)
  const slow = record.steps.find((s) => s.component === 'worker' && s.action === 'restore')
  assert.ok(slow.durationMs >= 1500)
  // A blocked loop would fire the timer once at most, after the call returns.
  assert.ok(during >= 10, `timer fired ${during} times while the 1.5 s restore ran`)
})

test('an AbortSignal stops the rollback at a step boundary; resume finishes it', async (t) => {
  const { dir, stack } = await setup(t, { slowMs: 300 })
  const snap = await stack.snapshot()
  deployBad(dir)
  const ac = new AbortController()
  const record = await stack.rollback(snap.id, {
    signal: ac.signal,
    onEvent: (e) => {
      if (e.kind === 'step_started' && e.component === 'worker') ac.abort()
    },
  })
  assert.equal(record.status, 'interrupted')
  // The step in flight finished; the next ones did not run.
  assert.deepEqual(record.steps.map((s) => `${s.component}/${s.action}`), ['worker/restore'])
  assert.equal(read(dir, 'conf/app.toml'), 'mode = "broken"\n')
  assert.deepEqual((await stack.check()).unfinishedRollbacks, [record.rollbackId])

  const events = []
  const done = await stack.resume(record.rollbackId, { onEvent: (e) => events.push(e) })
  assert.equal(done.status, 'succeeded', done.error)
  assert.equal(done.resumed, true)
  assert.equal(done.rollbackId, record.rollbackId)
  assert.ok(events.some((e) => e.kind === 'step_started'))
  assert.equal((await stack.verify(snap.id)).ok, true)
  await rejectsWith(stack.resume(record.rollbackId), 'CONFIG')

  // Aborted before the call: it rejects at once, as Node's own APIs do, and leaves
  // nothing behind (no safety snapshot, no unfinished rollback for a later resume).
  deployBad(dir)
  const before = (await stack.list()).length
  const reason = new Error('deploy pipeline cancelled')
  for (const call of [
    () => stack.rollback(snap.id, { signal: AbortSignal.abort(reason) }),
    () => stack.drill({ signal: AbortSignal.abort(reason) }),
  ]) {
    await assert.rejects(call(), (e) => {
      assert.ok(e instanceof AbortError)
      assert.equal(e.name, 'AbortError')
      assert.equal(e.code, 'ABORT_ERR')
      assert.equal(e.cause, reason)
      return true
    })
  }
  assert.equal((await stack.list()).length, before, 'no safety snapshot')
  assert.deepEqual((await stack.check()).unfinishedRollbacks, [])
  assert.equal(read(dir, 'conf/app.toml'), 'mode = "broken"\n')
  await assert.rejects(stack.resume('latest'), (e) => e.code === 'NOT_FOUND')
})

test('resume takes a signal too: it stops again at a step boundary', async (t) => {
  const { dir, stack } = await setup(t, { slowMs: 300 })
  const snap = await stack.snapshot()
  deployBad(dir)
  const first = new AbortController()
  const record = await stack.rollback(snap.id, {
    signal: first.signal,
    onEvent: (e) => e.kind === 'step_started' && first.abort(),
  })
  assert.equal(record.status, 'interrupted')
  const again = new AbortController()
  const resumed = await stack.resume(record.rollbackId, {
    signal: again.signal,
    onEvent: (e) => e.kind === 'step_started' && again.abort(),
  })
  assert.equal(resumed.status, 'interrupted', resumed.error)
  assert.equal(resumed.rollbackId, record.rollbackId)
  assert.deepEqual((await stack.check()).unfinishedRollbacks, [record.rollbackId])
  const done = await stack.resume('latest')
  assert.equal(done.status, 'succeeded', done.error)
  assert.equal((await stack.verify(snap.id)).ok, true)
})

test('an onEvent callback whose promise rejects does not take the process down', async (t) => {
  const { dir, stack } = await setup(t)
  const snap = await stack.snapshot()
  deployBad(dir)
  const warnings = []
  const onWarning = (w) => warnings.push(w)
  process.on('warning', onWarning)
  t.after(() => process.off('warning', onWarning))
  const record = await stack.rollback(snap.id, {
    onEvent: async (e) => {
      throw new Error(`monitor failed on ${e.kind}`)
    },
  })
  assert.equal(record.status, 'succeeded', record.error)
  assert.deepEqual((await stack.check()).unfinishedRollbacks, [])
  await new Promise((r) => setImmediate(r))
  assert.ok(warnings.some((w) => /monitor failed/.test(w.message)), warnings.map((w) => w.message).join('\n'))
})

test('a second rollback while one runs is LOCKED', async (t) => {
  const { dir, stack } = await setup(t, { slowMs: 1000 })
  const snap = await stack.snapshot()
  deployBad(dir)
  let started
  const running = new Promise((resolve) => (started = resolve))
  const first = stack.rollback(snap.id, { onEvent: (e) => e.kind === 'step_started' && started() })
  await running
  await rejectsWith(stack.rollback(snap.id), 'LOCKED')
  assert.equal((await first).status, 'succeeded')
})

test('drill, check and gc', async (t) => {
  const { stack } = await setup(t)
  const drill = await stack.drill({ level: 'component', components: ['config', 'code'] })
  assert.equal(drill.kind, 'drill')
  assert.equal(drill.status, 'succeeded', drill.error)
  assert.ok(drill.notes.some((n) => n.startsWith('perturbed config')))
  const check = await stack.check()
  assert.equal(check.ok, true)
  assert.deepEqual(Object.keys(check.components).sort(), ['code', 'config', 'release', 'worker'])
  assert.equal(check.newestDrill.id, drill.rollbackId)
  assert.equal(typeof check.newestSnapshot.ageSeconds, 'number')
  assert.deepEqual(check.unfinishedRollbacks, [])

  const a = await stack.snapshot({ label: 'a' })
  const b = await stack.snapshot({ label: 'b' })
  const gc = await stack.gc({ keep: 1 })
  assert.ok(gc.removed.includes(a.id))
  assert.ok(gc.kept.includes(b.id))
  assert.equal(typeof gc.freedBytes, 'number')
  await rejectsWith(stack.gc({ keep: 0 }), 'CONFIG')
})

test('health probes each check once and carries no secret', async (t) => {
  const dir = scratch(t)
  process.env.RBNODE_HEALTH_TOKEN = 'tok-77aa19c0'
  const stack = Stack.fromToml(
    `[[component]]
name = "svc"
driver = "files"
paths = ["."]
health = [
  { http = "http://ops:pw-3c9e1d@127.0.0.1:9/health", timeout = "200ms" },
  { command = ["sh", "-c", "echo denied for $0 >&2; exit 1", "\${RBNODE_HEALTH_TOKEN}"], timeout = "1s" },
  { command = ["true"] },
]
`,
    dir,
  )
  const h = await stack.health()
  assert.deepEqual(h.svc.map((r) => r.ok), [false, false, true])
  const text = JSON.stringify(h)
  assert.ok(!text.includes('pw-3c9e1d') && !text.includes('tok-77aa19c0'), text)
  assert.match(text, /denied for \*\*\*/)
  // User info is hidden whole: the user may be a token as much as the password.
  assert.match(h.svc[0].check, /http:\/\/\*\*\*@127\.0\.0\.1:9\//)
  assert.ok(!h.svc[0].check.includes('ops'), h.svc[0].check)
  await rejectsWith(stack.health({ components: ['nope'] }), 'NOT_FOUND')
})
