// The market monitor service: parses the venue's quote feed for a watchlist every
// 250 ms, rejects quotes that are not sane (more than 20% away from the reference
// price), and reports on GET /health:
//   {status, version, deployment, errorRate, perfDegradation, latencyMs, dataImpact}
// errorRate is the share of rejected quotes over the last 50 rounds. The same file
// runs in the Docker image, as a plain process and under pm2 (PORT, DEPLOYMENT).
'use strict'
const http = require('http')
const { version } = require('./package.json')

// The venue sends prices as text, with thousands separators.
const FEED = [
  ['BTC-USD', '61,250.50'], ['ETH-USD', '3,412.25'], ['BNB-USD', '1,012.40'], ['SOL-USD', '148.32'],
  ['AVAX-USD', '36.10'], ['LINK-USD', '14.87'], ['XRP-USD', '0.5214'], ['DOGE-USD', '0.1432'],
]
const REFERENCE = Object.fromEntries(FEED.map(([s, p]) => [s, Number(p.replace(/,/g, ''))]))

function parsePrice(text) {
  return Number(text.replace(/,/g, ''))
}

const WINDOW = 50 * FEED.length
const results = [] // true: accepted
let lastRoundMs = 0
function round() {
  const t0 = process.hrtime.bigint()
  for (const [symbol, text] of FEED) {
    const price = parsePrice(text)
    results.push(Number.isFinite(price) && Math.abs(price / REFERENCE[symbol] - 1) <= 0.2)
  }
  results.splice(0, Math.max(0, results.length - WINDOW))
  lastRoundMs = Number(process.hrtime.bigint() - t0) / 1e6
}
round()
setInterval(round, 250)

const server = http.createServer((req, res) => {
  if (req.url !== '/health') return res.writeHead(404).end()
  const errorRate = results.filter((ok) => !ok).length / results.length
  const body = JSON.stringify({
    status: errorRate > 0.1 ? 'degraded' : 'healthy',
    version,
    deployment: process.env.DEPLOYMENT || 'local',
    errorRate: Number(errorRate.toFixed(3)),
    perfDegradation: 0,
    latencyMs: Number(lastRoundMs.toFixed(2)),
    dataImpact: 'none',
  })
  res.writeHead(200, { 'content-type': 'application/json' }).end(body)
})
server.listen(Number(process.env.PORT || 8080), process.env.HOST || '127.0.0.1')

// Graceful stop (pm2 sends SIGINT, docker and the service script SIGTERM): finish the
// requests in flight, then stay up a moment, because under pm2's cluster mode the
// master may already have handed this worker a connection it has not seen yet (see
// the pm2 driver's docs); pm2 sends SIGKILL after 1.6 s.
const stop = () => {
  server.close(() => setTimeout(() => process.exit(0), 500))
  server.closeIdleConnections()
  setTimeout(() => process.exit(0), 1400).unref()
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
