// The README's TypeScript usage compiles with `strict` against the shipped
// declarations (index.d.ts): every ```ts block, each as an ES module of its own.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { scratch } from './helpers.mjs'

const pkgDir = join(dirname(fileURLToPath(import.meta.url)), '..')

/** The ```ts blocks of a Markdown text. */
export function tsBlocks(markdown) {
  return [...markdown.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1])
}

/**
 * Type-checks each source with `tsc --strict` in a scratch project where `rollback`
 * resolves to the package at `pkg` (its package.json `types`). Returns tsc's output,
 * empty when it passed.
 */
export function typecheck(t, sources, pkg = pkgDir) {
  const app = scratch(t, 'rollback-readme-')
  mkdirSync(join(app, 'node_modules', '@types'), { recursive: true })
  symlinkSync(pkg, join(app, 'node_modules', 'rollback'))
  symlinkSync(join(pkgDir, 'node_modules', '@types', 'node'), join(app, 'node_modules', '@types', 'node'))
  symlinkSync(join(pkgDir, 'node_modules', 'undici-types'), join(app, 'node_modules', 'undici-types'))
  const files = sources.map((src, i) => {
    writeFileSync(join(app, `block${i}.mts`), src)
    return `block${i}.mts`
  })
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { strict: true, noEmit: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', types: ['node'], skipLibCheck: false },
    files,
  }))
  try {
    execFileSync(process.execPath, [join(pkgDir, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: app, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    return ''
  } catch (e) {
    return `${e.stdout}${e.stderr}` || String(e)
  }
}

test("the README's TypeScript usage compiles with strict on", (t) => {
  const blocks = tsBlocks(readFileSync(join(pkgDir, 'README.md'), 'utf8'))
  assert.ok(blocks.length >= 1, 'the README has a ```ts block')
  // It uses what a stack built in code needs: [[notify]], [watch], and resume's signal.
  const all = blocks.join('\n')
  for (const used of ['notify:', 'watch:', 'probe:', 'stack.resume(']) assert.ok(all.includes(used), used)
  assert.equal(typecheck(t, blocks), '')
})

test('the declarations refuse a misspelt config key and a probe of no kind', (t) => {
  const out = typecheck(t, [`
import { Stack } from 'rollback'
Stack.fromConfig({ watch: { probe: [{ name: 'x', max_age: '1s' }] } })
Stack.fromConfig({ notify: [{ kind: 'email', to: 'ops@example.com' }] })
Stack.fromConfig({ watch: { interval: '1s', probes: [] } })
`])
  assert.match(out, /block0\.mts\(3,/)
  assert.match(out, /block0\.mts\(4,/)
  assert.match(out, /block0\.mts\(5,/)
})
