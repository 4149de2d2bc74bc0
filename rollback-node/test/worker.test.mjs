// Worker threads that are ended while a call runs: test runners and pools end
// workers on timeouts, and the process that hosts them must survive it.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

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
