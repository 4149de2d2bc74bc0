// Worker threads that are ended while a call runs: test runners and pools end
// workers on timeouts, and the process that hosts them must survive it; a rollback a
// worker started still ends with its record.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

import { Stack } from '../index.mjs'
import { basicStack, deployBad, scratch } from './helpers.mjs'

const entry = pathToFileURL(fileURLToPath(new URL('../index.mjs', import.meta.url))).href

// Run in a child process: a crash must fail this test, not the runner.
function runScript(dir, body) {
  const script = join(dir, 'scenario.mjs')
  writeFileSync(
    script,
    `import { Worker } from 'node:worker_threads'
const dir = ${JSON.stringify(dir)}
const entry = ${JSON.stringify(entry)}
${body}
`,
  )
  return spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 60_000 })
}

for (const call of ['rollback', 'snapshot']) {
  test(`worker.terminate() while ${call}() runs leaves the host process alive`, (t) => {
    const { dir } = basicStack(scratch(t), { slowMs: 1500 })
    deployBad(dir)
    const r = runScript(
      dir,
      `
const code = \`
  import { parentPort } from 'node:worker_threads'
  import { Stack } from \${JSON.stringify(entry)}
  const stack = await Stack.load(\${JSON.stringify(dir + '/rollback.toml')})
  const onEvent = (e) => { if (e.kind === 'step_started' || e.kind === 'snapshot_started') parentPort.postMessage('started') }
  if (${JSON.stringify(call)} === 'rollback') {
    const snap = await stack.snapshot()
    parentPort.postMessage('snapshotted')
    await stack.rollback(snap.id, { onEvent })
  } else {
    await stack.snapshot({ onEvent })
  }
\`
const w = new Worker(code, { eval: true })
await new Promise((resolve, reject) => {
  w.on('message', (m) => { if (m === 'started') resolve() })
  w.on('error', reject)
})
await w.terminate()
// Let the call in flight finish inside the ended worker's runtime.
await new Promise((r) => setTimeout(r, 3000))
const { Stack } = await import(entry)
const stack = await Stack.load(dir + '/rollback.toml')
console.log('alive', (await stack.list()).length)
`,
    )
    assert.equal(r.signal, null, `killed by ${r.signal}: ${r.stderr}`)
    assert.equal(r.status, 0, r.stderr)
    assert.match(r.stdout, /^alive \d+/m, r.stdout + r.stderr)
  })
}

// Four workers of a pool, each in snapshot(), ended together, five times over: the
// stacks they wrapped are finalized with their environments while the snapshots run on.
test('a pool of four workers ended together during snapshot(), five rounds, leaves the host process alive', (t) => {
  const { dir } = basicStack(scratch(t), { slowMs: 0 })
  const r = runScript(
    dir,
    `
const code = \`
  import { parentPort } from 'node:worker_threads'
  import { Stack } from \${JSON.stringify(entry)}
  const stack = await Stack.load(\${JSON.stringify(dir + '/rollback.toml')})
  const onEvent = (e) => { if (e.kind === 'snapshot_started') parentPort.postMessage('started') }
  for (;;) await stack.snapshot({ onEvent })
\`
for (let round = 0; round < 5; round++) {
  const workers = []
  const started = []
  for (let i = 0; i < 4; i++) {
    const w = new Worker(code, { eval: true })
    workers.push(w)
    started.push(new Promise((resolve, reject) => {
      w.on('message', (m) => { if (m === 'started') resolve() })
      w.on('error', reject)
    }))
  }
  await Promise.all(started)
  await Promise.all(workers.map((w) => w.terminate()))
}
const { Stack } = await import(entry)
const stack = await Stack.load(dir + '/rollback.toml')
console.log('alive', (await stack.list()).length)
`,
  )
  assert.equal(r.signal, null, `killed by ${r.signal}: ${r.stderr.slice(-3000)}`)
  assert.equal(r.status, 0, r.stderr.slice(-3000))
  assert.match(r.stdout, /^alive \d+/m, r.stdout + r.stderr.slice(-3000))
})

// The worker ends in the middle of the rollback's slow step. Whether the host has the
// addon loaded or not (then the worker's end is the last user of napi's runtime, which
// it shuts down), the rollback stops at the step boundary and its record is written
// before terminate() resolves; resume then finishes it.
for (const hostLoaded of [false, true]) {
  test(`a rollback whose worker ends mid-step ends interrupted with its record (addon ${hostLoaded ? 'also' : 'not'} loaded by the host)`, async (t) => {
    const { dir } = basicStack(scratch(t), { slowMs: 3000 })
    const snap = await (await Stack.load(join(dir, 'rollback.toml'))).snapshot()
    deployBad(dir)
    const r = runScript(
      dir,
      `
${hostLoaded ? 'await import(entry)' : ''}
const snap = ${JSON.stringify(snap.id)}
const code = \`
  import { parentPort } from 'node:worker_threads'
  import { Stack } from \${JSON.stringify(entry)}
  const stack = await Stack.load(\${JSON.stringify(dir + '/rollback.toml')})
  await stack.rollback(\${JSON.stringify(snap)}, {
    onEvent: (e) => { if (e.kind === 'step_started' && e.component === 'worker') parentPort.postMessage('slow step') },
  })
  parentPort.postMessage('finished')
\`
const w = new Worker(code, { eval: true })
const messages = []
await new Promise((resolve, reject) => {
  w.on('message', (m) => {
    messages.push(m)
    if (m === 'slow step') resolve()
  })
  w.on('error', reject)
  w.on('exit', () => reject(new Error('the worker ended first: ' + JSON.stringify(messages))))
})
await w.terminate()
// No waiting: the record must be there when terminate() resolves.
const { Stack } = await import(entry)
const stack = await Stack.load(dir + '/rollback.toml')
const history = await stack.history()
const out = {
  messages,
  records: history.map((r) => ({ id: r.rollbackId, status: r.status, steps: r.steps.map((s) => s.component + '/' + s.action + '/' + s.status) })),
  unfinished: (await stack.check()).unfinishedRollbacks,
}
// The record file itself, not the entry history() makes up from a journal left by a crash.
if (history.length === 1) out.written = await stack.record(history[0].rollbackId).then((r) => r.status, (e) => e.code)
if (history.length === 1 && history[0].status === 'interrupted') {
  const done = await stack.resume(history[0].rollbackId)
  out.resumed = { status: done.status, error: done.error, resumed: done.resumed }
  out.verified = (await stack.verify(snap)).ok
  out.unfinishedAfter = (await stack.check()).unfinishedRollbacks
}
console.log(JSON.stringify(out))
`,
    )
    assert.equal(r.signal, null, `killed by ${r.signal}: ${r.stderr.slice(-3000)}`)
    assert.equal(r.status, 0, r.stderr.slice(-3000))
    const out = JSON.parse(r.stdout.trim().split('\n').pop())
    assert.equal(out.records.length, 1, `one record right after terminate(): ${JSON.stringify(out)}`)
    const [rec] = out.records
    assert.equal(rec.status, 'interrupted', JSON.stringify(out))
    assert.equal(out.written, 'interrupted', `the record is written: ${JSON.stringify(out)}`)
    // The slow step ran to its end; nothing after it started.
    assert.deepEqual(rec.steps, ['worker/restore/ok'], JSON.stringify(out))
    assert.deepEqual(out.unfinished, [rec.id])
    assert.deepEqual(out.resumed, { status: 'succeeded', error: null, resumed: true })
    assert.equal(out.verified, true)
    assert.deepEqual(out.unfinishedAfter, [])
  })
}
