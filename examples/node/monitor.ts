/**
 * A market monitor that rolls its own deployment back.
 *
 * Polls the service's /health endpoint(s), turns what it sees into symptoms, asks
 * rollback's decision matrix (SPEC §7) what to do, and when the answer is to roll
 * back: plans, rolls back to the newest snapshot taken while healthy, verifies, and
 * posts the record to an incident endpoint. Runs in-process (no CLI), e.g. under pm2.
 *
 *   ROLLBACK_CONFIG=/opt/app/rollback.toml \
 *   HEALTH_URL=http://127.0.0.1:3000/health \
 *   RECORD_URL=http://127.0.0.1:9000/incidents \
 *   node monitor.js
 *
 * HEALTH_URL may list several endpoints, comma-separated (the same service deployed
 * several ways): each poll asks them all and the worst signal wins, as in the matrix.
 *
 * Optional: POLL_MS (5000), TIMEOUT_MS (2000), BAD_SAMPLES (3), ROLLBACK_TARGET
 * (`last-good`: the newest snapshot taken while the health checks passed).
 *
 * rollback-node's test suite type-checks it with `strict` on, compiles it and runs it
 * against a failing /health (rollback-node/test/package.test.mjs).
 */
import { Stack, isRollbackError } from 'rollback'
import type { Assessment, RollbackRecord, StepEvent, Symptoms } from 'rollback'

interface Settings {
  config: string
  /** One or more /health endpoints. */
  healthUrls: string[]
  recordUrl: string
  /** Between polls. */
  intervalMs: number
  /** A poll slower than this counts as a failure. */
  timeoutMs: number
  /** Consecutive bad samples before acting: one slow poll is not an incident. */
  badSamples: number
  /** Which snapshot to go back to. */
  target: string
}

/** What the service reports on /health (extra fields are ignored). */
interface HealthBody {
  status?: string
  errorRate?: number
  perfDegradation?: number
  latencyMs?: number
  dataImpact?: 'none' | 'corruption' | 'loss'
}

function settings(env: NodeJS.ProcessEnv): Settings {
  const need = (k: string): string => {
    const v = env[k]
    if (!v) throw new Error(`${k} is not set`)
    return v
  }
  const healthUrls = need('HEALTH_URL')
    .split(',')
    .map((u) => u.trim())
    .filter((u) => u !== '')
  if (healthUrls.length === 0) throw new Error('HEALTH_URL lists no URL')
  return {
    config: env.ROLLBACK_CONFIG ?? 'rollback.toml',
    healthUrls,
    recordUrl: need('RECORD_URL'),
    intervalMs: Number(env.POLL_MS ?? 5000),
    timeoutMs: Number(env.TIMEOUT_MS ?? 2000),
    badSamples: Number(env.BAD_SAMPLES ?? 3),
    target: env.ROLLBACK_TARGET ?? 'last-good',
  }
}

/** One poll of /health as symptoms; an unreachable service is a 100% error rate. */
export async function probe(url: string, timeoutMs: number): Promise<Symptoms> {
  const started = performance.now()
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
    const latencyMs = performance.now() - started
    if (!res.ok) return { errorRate: 1, perfDegradation: 0, latencyMs }
    const body = (await res.json()) as HealthBody
    return {
      errorRate: body.errorRate ?? (body.status === 'healthy' ? 0 : 1),
      perfDegradation: body.perfDegradation ?? 0,
      latencyMs: body.latencyMs ?? latencyMs,
      dataImpact: body.dataImpact ?? 'none',
    }
  } catch {
    return { errorRate: 1, perfDegradation: 0, latencyMs: performance.now() - started }
  }
}

const IMPACT = { none: 0, corruption: 1, loss: 2 } as const

/** One poll of every endpoint at once; the worst signal of each kind wins. */
export async function probeAll(urls: string[], timeoutMs: number): Promise<Symptoms> {
  const all = await Promise.all(urls.map((u) => probe(u, timeoutMs)))
  return all.reduce((a, b) => ({
    errorRate: Math.max(a.errorRate, b.errorRate),
    perfDegradation: Math.max(a.perfDegradation, b.perfDegradation),
    latencyMs: Math.max(a.latencyMs ?? 0, b.latencyMs ?? 0),
    dataImpact: IMPACT[b.dataImpact ?? 'none'] > IMPACT[a.dataImpact ?? 'none'] ? b.dataImpact : a.dataImpact,
  }))
}

/** Plans, rolls back and verifies; the record comes back whatever its status. */
export async function rollBack(stack: Stack, target: string, a: Assessment, signal: AbortSignal): Promise<RollbackRecord> {
  const plan = await stack.plan(target, { level: 'complete' })
  console.log(plan.text)
  const record = await stack.rollback(target, {
    level: 'complete',
    trigger: a.reasons.join('; '),
    severity: a.severity,
    signal,
    onEvent: (e: StepEvent) => {
      if (e.kind === 'step_finished') console.log(`[rollback] ${e.component} ${e.action}: ${e.status} (${e.durationMs} ms)`)
    },
  })
  const v = await stack.verify(target)
  for (const d of v.drift) console.error(`[rollback] ${d.component} still differs: ${d.differences.join('; ')}`)
  return record
}

async function post(url: string, record: RollbackRecord): Promise<void> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(record),
    signal: AbortSignal.timeout(10_000),
  })
  if (!res.ok) throw new Error(`posting the record: HTTP ${res.status}`)
}

export async function main(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const s = settings(env)
  const stack = await Stack.load(s.config)
  const stop = new AbortController()
  process.once('SIGTERM', () => stop.abort())
  let bad = 0
  while (!stop.signal.aborted) {
    const symptoms = await probeAll(s.healthUrls, s.timeoutMs)
    const a = stack.assess(symptoms)
    bad = a.rollBack ? bad + 1 : 0
    if (a.rollBack) console.error(`[monitor] bad sample ${bad}/${s.badSamples}: ${a.severity}, ${a.decision} (${a.reasons.join(', ')})`)
    if (bad >= s.badSamples || a.decision === 'immediate_rollback') {
      console.error(`[monitor] ${a.severity}: ${a.reasons.join(', ')} -> rolling back to ${s.target}`)
      try {
        const record = await rollBack(stack, s.target, a, stop.signal)
        await post(s.recordUrl, record)
        console.error(`[monitor] rollback ${record.rollbackId}: ${record.status} in ${record.durationMs} ms (RTO met: ${record.rtoMet})`)
        return record.status === 'succeeded' ? 0 : 1
      } catch (e) {
        if (isRollbackError(e)) {
          // LOCKED: someone else is already rolling back; NOT_FOUND: no healthy snapshot.
          console.error(`[monitor] rollback refused (${e.code}${e.component ? `, ${e.component}` : ''}): ${e.message}`)
          return e.code === 'LOCKED' ? 0 : 2
        }
        throw e
      }
    }
    await new Promise((r) => setTimeout(r, s.intervalMs))
  }
  return 0
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      console.error(e)
      process.exit(2)
    },
  )
}
