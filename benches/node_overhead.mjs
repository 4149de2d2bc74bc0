// Overhead of the Node binding (rollback-node), against rollback-core called from Rust.
//
//   node benches/node_overhead.mjs [--no-build]
//
// Builds both sides in release (the addon with @napi-rs/cli, the Rust side as the
// `bench_core` example of rollback-node; respects CARGO_TARGET_DIR), then measures
//   - `assess`: per-call time from Node (goal: < 20 µs) and from Rust;
//   - a small snapshot (a git repo and a files component of 20 small files) taken
//     from Node and from Rust on identical stacks, in alternating rounds (goal: Node
//     within 5% of Rust).
// Prints a table and one JSON line. Results are written down in benches/README.md.
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const pkg = join(root, 'rollback-node')
const targetDir = process.env.CARGO_TARGET_DIR ?? join(root, 'target')
const run = (cwd, argv, opts = {}) => execFileSync(argv[0], argv.slice(1), { cwd, encoding: 'utf8', ...opts })

if (!process.argv.includes('--no-build')) {
  const io = { stdio: ['ignore', 'inherit', 'inherit'] }
  run(pkg, ['npx', 'napi', 'build', '--platform', '--release', '--js', 'binding.js', '--dts', 'index.d.ts', '--no-const-enum'], io)
  run(root, ['cargo', 'build', '--release', '-p', 'rollback-node', '--example', 'bench_core'], io)
}
const { Stack, assess } = createRequire(import.meta.url)(join(pkg, 'index.js'))
const rustBin = join(targetDir, 'release', 'examples', 'bench_core')

function makeStack() {
  const dir = mkdtempSync(join(tmpdir(), 'rollback-bench-'))
  const repo = join(dir, 'repo')
  mkdirSync(repo)
  const git = (...a) => run(repo, ['git', '-c', 'user.name=bench', '-c', 'user.email=bench@invalid', ...a])
  git('init', '-q', '-b', 'main')
  writeFileSync(join(repo, 'app.js'), 'console.log(1)\n')
  git('add', '-A')
  git('commit', '-q', '-m', 'v1')
  mkdirSync(join(dir, 'conf'))
  for (let i = 0; i < 20; i++) writeFileSync(join(dir, 'conf', `f${i}.toml`), `key${i} = ${'x'.repeat(200)}\n`)
  writeFileSync(
    join(dir, 'rollback.toml'),
    '[[component]]\nname = "code"\ndriver = "git"\nrepo = "repo"\n\n[[component]]\nname = "config"\ndriver = "files"\npaths = ["conf"]\n',
  )
  return dir
}

const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * p)]
const median = (xs) => pct(xs, 0.5)

// assess: warm up, then time batches; the best batch is the overhead without GC noise.
const CALLS = 200_000
const symptoms = (i) => ({ errorRate: 0.31 + (i % 3) * 0.01, perfDegradation: 0.55, latencyMs: 120, dataImpact: 'none' })
for (let i = 0; i < 50_000; i++) assess(symptoms(i))
const nodeAssess = []
for (let b = 0; b < 5; b++) {
  const t = process.hrtime.bigint()
  for (let i = 0; i < CALLS; i++) assess(symptoms(i))
  nodeAssess.push(Number(process.hrtime.bigint() - t) / CALLS)
}
const assessDir = makeStack()
const rustAssess = JSON.parse(run(root, [rustBin, assessDir, '0', String(CALLS * 5)])).assess_ns

// snapshot: alternating rounds so machine noise hits both sides alike; the pooled
// medians are compared.
const ROUNDS = 10
const PER_ROUND = 20
const nodeDir = makeStack()
const rustDir = makeStack()
const stack = await Stack.load(join(nodeDir, 'rollback.toml'))
for (let i = 0; i < 5; i++) await stack.snapshot()
const nodeSnap = []
const rustSnap = []
for (let r = 0; r < ROUNDS; r++) {
  for (let i = 0; i < PER_ROUND; i++) {
    const t = process.hrtime.bigint()
    await stack.snapshot()
    nodeSnap.push(Number(process.hrtime.bigint() - t) / 1e6)
  }
  rustSnap.push(...JSON.parse(run(root, [rustBin, rustDir, String(PER_ROUND), '0'])).snapshot_ms)
}
for (const d of [assessDir, nodeDir, rustDir]) rmSync(d, { recursive: true, force: true })

const res = {
  assess_node_us: Math.min(...nodeAssess) / 1000,
  assess_node_median_us: median(nodeAssess) / 1000,
  assess_rust_us: rustAssess / 1000,
  snapshot_node_ms: median(nodeSnap),
  snapshot_rust_ms: median(rustSnap),
}
res.assess_overhead_us = res.assess_node_us - res.assess_rust_us
res.snapshot_diff_pct = ((res.snapshot_node_ms - res.snapshot_rust_ms) / res.snapshot_rust_ms) * 100
const f = (x, d = 2) => x.toFixed(d)
console.log(`assess    node ${f(res.assess_node_us, 3)} µs/call (median batch ${f(res.assess_node_median_us, 3)})   rust ${f(res.assess_rust_us, 3)} µs/call   goal < 20 µs: ${res.assess_node_us < 20 ? 'met' : 'MISSED'}`)
console.log(`snapshot  node ${f(res.snapshot_node_ms, 3)} ms   rust ${f(res.snapshot_rust_ms, 3)} ms   node vs rust ${res.snapshot_diff_pct >= 0 ? '+' : ''}${f(res.snapshot_diff_pct, 1)}%   goal within 5%: ${Math.abs(res.snapshot_diff_pct) <= 5 ? 'met' : 'MISSED'}`)
console.log(`           ${nodeSnap.length} snapshots each; node p10/p90 ${f(pct(nodeSnap, 0.1), 3)}/${f(pct(nodeSnap, 0.9), 3)} ms, rust ${f(pct(rustSnap, 0.1), 3)}/${f(pct(rustSnap, 0.9), 3)} ms`)
console.log(JSON.stringify(res))
