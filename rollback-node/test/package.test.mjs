// The npm package as users get it: `npm pack`, installed into a fresh project, used
// from `require`, from ESM `import`, and from TypeScript with `strict` on (together
// with examples/node/monitor.ts).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile, execFileSync } from 'node:child_process'
import { createServer } from 'node:http'
import { promisify } from 'node:util'
import { copyFileSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { Stack } from '../index.mjs'
import { basicStack, deployBad, scratch } from './helpers.mjs'

const pkgDir = join(dirname(fileURLToPath(import.meta.url)), '..')
const repoDir = join(pkgDir, '..')
const run = (cwd, argv, env = {}) =>
  execFileSync(argv[0], argv.slice(1), { cwd, encoding: 'utf8', env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })

test('npm pack installs into a fresh project; require, import and strict TypeScript work; the monitor example runs', async (t) => {
  const tmp = scratch(t, 'rollback-pack-')
  const packed = JSON.parse(run(pkgDir, ['npm', 'pack', '--json', '--pack-destination', tmp]))
  const files = packed[0].files.map((f) => f.path).sort()
  for (const f of ['binding.js', 'index.d.ts', 'index.js', 'index.mjs', 'package.json']) assert.ok(files.includes(f), `${f} in ${files}`)
  assert.ok(files.some((f) => f.endsWith('.node')), 'the addon is in the package')
  assert.ok(!files.some((f) => f.startsWith('src/') || f.startsWith('test/')), 'no sources in the package')

  const app = join(tmp, 'app')
  mkdirSync(app)
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }))
  // The tarball has no dependencies: installing it needs no network.
  run(app, ['npm', 'install', '--offline', '--no-audit', '--no-fund', join(tmp, packed[0].filename)])
  assert.ok(readdirSync(join(app, 'node_modules', 'rollback')).includes('index.js'))

  const cjs = run(app, ['node', '-e', `
    const { Stack, assess, RollbackError } = require('rollback')
    const a = assess({ errorRate: 0.31, perfDegradation: 0.55, dataImpact: 'none' })
    const stack = Stack.fromToml('', process.cwd())
    try { Stack.fromToml('[[component]]\\nname = "x"\\ndriver = "nope"\\n', process.cwd()) } catch (e) {
      console.log(JSON.stringify({ severity: a.severity, components: stack.components.length, code: e.code, isError: e instanceof RollbackError }))
    }`])
  assert.deepEqual(JSON.parse(cjs), { severity: 'high', components: 0, code: 'CONFIG', isError: true })

  const esm = run(app, ['node', '--input-type=module', '-e', `
    import rollback, { Stack, assess } from 'rollback'
    import { createRequire } from 'node:module'
    const same = createRequire(import.meta.url)('rollback').Stack === Stack
    const stack = await Stack.load('missing.toml').catch((e) => e.code)
    console.log(JSON.stringify({ decision: assess({ errorRate: 0.6, perfDegradation: 0 }).decision, same, stack, def: typeof rollback.Stack }))`])
  assert.deepEqual(JSON.parse(esm), { decision: 'immediate_rollback', same: true, stack: 'CONFIG', def: 'function' })

  // TypeScript, strict, against the installed package's declarations.
  mkdirSync(join(app, 'node_modules', '@types'))
  symlinkSync(join(pkgDir, 'node_modules', '@types', 'node'), join(app, 'node_modules', '@types', 'node'))
  symlinkSync(join(pkgDir, 'node_modules', 'undici-types'), join(app, 'node_modules', 'undici-types'))
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { strict: true, noEmit: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', types: ['node'], skipLibCheck: false, noUnusedLocals: true },
    files: ['uses.ts', 'uses-esm.mts', 'monitor.ts'],
  }))
  writeFileSync(join(app, 'uses.ts'), `
import { Stack, assess, isRollbackError, RollbackError } from 'rollback'
import type { Assessment, ErrorCode, Plan, RollbackRecord, Snapshot, StepEvent, Verification } from 'rollback'

export async function use(): Promise<string> {
  const stack: Stack = await Stack.load('rollback.toml')
  const snap: Snapshot = await stack.snapshot({ label: 'v1.2.0', components: ['db'] })
  const plan: Plan = await stack.plan(snap.id, { level: 'phase', phases: [2] })
  const ac = new AbortController()
  const events: StepEvent[] = []
  const record: RollbackRecord = await stack.rollback(snap.id, {
    level: 'complete', trigger: 'error_rate', severity: 'high', safetySnapshot: true,
    onEvent: (e) => { events.push(e) }, signal: ac.signal,
  })
  const v: Verification = await stack.verify(snap.id, { components: ['db'] })
  const a: Assessment = assess({ errorRate: 0.3, perfDegradation: 0.5, dataImpact: 'none' })
  const ok: boolean = v.ok && v.drift.length === 0 && a.rollBack
  const dur: number = record.durationMs + plan.predictedMs
  const status: 'succeeded' | 'failed' | 'compensated' | 'interrupted' = record.status
  const ids: string[] = (await stack.history()).map((r) => r.rollbackId)
  const fromObj = Stack.fromConfig({ component: [{ name: 'code', driver: 'git', repo: '.' }] }, '/tmp')
  try {
    await stack.resume('latest')
  } catch (e) {
    if (isRollbackError(e)) {
      const code: ErrorCode = e.code
      const c: string | null = e.component
      return code + c
    }
    if (e instanceof RollbackError) return e.code
  }
  return [ok, dur, status, ids, fromObj.storePath, record.safetySnapshotId ?? 'none'].join()
}
`)
  writeFileSync(join(app, 'uses-esm.mts'), `
import { Stack, assess } from 'rollback'
export const sev: 'low' | 'medium' | 'high' | 'critical' = assess({ errorRate: 0.1, perfDegradation: 0 }).severity
export const load: Promise<Stack> = Stack.load('rollback.toml')
`)
  copyFileSync(join(repoDir, 'examples', 'node', 'monitor.ts'), join(app, 'monitor.ts'))
  const tsc = join(pkgDir, 'node_modules', 'typescript', 'bin', 'tsc')
  try {
    run(app, ['node', tsc, '-p', 'tsconfig.json'])
  } catch (e) {
    assert.fail(`tsc --noEmit failed:\n${e.stdout}${e.stderr}`)
  }

  // And strict TypeScript catches misuse: the declarations are not \`any\`.
  writeFileSync(join(app, 'bad.ts'), `
import { Stack, assess } from 'rollback'
assess({ errorRate: 0.1 })
export async function f(s: Stack) { const r = await s.rollback('x', { level: 'sideways' }); return r.rollback_id }
`)
  writeFileSync(join(app, 'tsconfig.bad.json'), JSON.stringify({ extends: './tsconfig.json', files: ['bad.ts'] }))
  const bad = (() => {
    try {
      run(app, ['node', tsc, '-p', 'tsconfig.bad.json'])
      return ''
    } catch (e) {
      return e.stdout
    }
  })()
  assert.match(bad, /perfDegradation/)
  assert.match(bad, /sideways/)
  assert.match(bad, /rollback_id/)

  // The monitor example, compiled and run against a failing /health: it rolls back and
  // posts the record.
  writeFileSync(join(app, 'tsconfig.emit.json'), JSON.stringify({ extends: './tsconfig.json', compilerOptions: { noEmit: false, outDir: 'out' }, files: ['monitor.ts'] }))
  run(app, ['node', tsc, '-p', 'tsconfig.emit.json'])
  const { dir } = basicStack(join(tmp, 'stack'))
  const stack = await Stack.load(join(dir, 'rollback.toml'))
  const snap = await stack.snapshot({ label: 'good' })
  deployBad(dir)
  const posted = []
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/incidents') {
        posted.push(JSON.parse(body))
        res.writeHead(201).end()
      } else {
        res.writeHead(503, { 'content-type': 'application/json' }).end('{"status":"degraded"}')
      }
    })
  })
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  t.after(() => server.close())
  const base = `http://127.0.0.1:${server.address().port}`
  const out = await promisify(execFile)('node', [join('out', 'monitor.js')], {
    cwd: app,
    env: {
      ...process.env,
      ROLLBACK_CONFIG: join(dir, 'rollback.toml'),
      HEALTH_URL: `${base}/health`,
      RECORD_URL: `${base}/incidents`,
      POLL_MS: '50',
      BAD_SAMPLES: '2',
      ROLLBACK_TARGET: snap.id,
    },
  })
  assert.match(out.stderr, /rolling back/)
  assert.equal(posted.length, 1)
  assert.equal(posted[0].snapshotId, snap.id)
  assert.equal(posted[0].status, 'succeeded')
  assert.equal(posted[0].severity, 'critical')
  assert.equal((await stack.verify(snap.id)).ok, true)
})
