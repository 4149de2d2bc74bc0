// Fixtures for the Node suite: a scratch stack on real git, files, releases and
// command components in a fresh temporary directory.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export function sh(cwd, ...argv) {
  return execFileSync(argv[0], argv.slice(1), { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()
}

export function git(repo, ...args) {
  return sh(repo, 'git', '-c', 'user.name=rollback-test', '-c', 'user.email=test@rollback.invalid', ...args)
}

/** A fresh directory, removed by `t.after`. */
export function scratch(t, prefix = 'rollback-node-') {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A git repo with one commit, on branch main. */
export function makeRepo(dir) {
  mkdirSync(dir, { recursive: true })
  git(dir, 'init', '-q', '-b', 'main')
  writeFileSync(join(dir, 'app.js'), 'console.log("v1")\n')
  git(dir, 'add', '-A')
  git(dir, 'commit', '-q', '-m', 'v1')
  return git(dir, 'rev-parse', 'HEAD')
}

export function commit(dir, file, content, message) {
  writeFileSync(join(dir, file), content)
  git(dir, 'add', '-A')
  git(dir, 'commit', '-q', '-m', message)
  return git(dir, 'rev-parse', 'HEAD')
}

/**
 * A stack of git (phase 1), files (phase 2), releases (phase 2) and a `command`
 * component (phase 3) whose restore takes `slowMs` (so a rollback runs long enough to
 * watch the event loop and to abort it). Returns the dir and the TOML text.
 */
export function basicStack(dir, { slowMs = 0 } = {}) {
  makeRepo(join(dir, 'repo'))
  mkdirSync(join(dir, 'conf'))
  writeFileSync(join(dir, 'conf', 'app.toml'), 'mode = "live"\n')
  mkdirSync(join(dir, 'releases', 'v1'), { recursive: true })
  mkdirSync(join(dir, 'releases', 'v2'), { recursive: true })
  symlinkSync('v1', join(dir, 'releases', 'current'))
  writeFileSync(join(dir, 'state.txt'), 'one\n')
  const sleep = (slowMs / 1000).toFixed(3)
  const toml = `
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
restore = ["sh", "-c", "sleep ${sleep}; cat > state.txt"]
`
  writeFileSync(join(dir, 'rollback.toml'), toml)
  return { dir, toml }
}

/** Changes every component of `basicStack`. */
export function deployBad(dir) {
  commit(join(dir, 'repo'), 'app.js', 'console.log("v2 broken")\n', 'v2')
  writeFileSync(join(dir, 'conf', 'app.toml'), 'mode = "broken"\n')
  rmSync(join(dir, 'releases', 'current'))
  symlinkSync('v2', join(dir, 'releases', 'current'))
  writeFileSync(join(dir, 'state.txt'), 'two\n')
}
