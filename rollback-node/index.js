'use strict'
// The public entry of the `rollback` package: the native binding (binding.js, generated
// by `napi build`) with its errors turned into `RollbackError`s. Types: index.d.ts.

const native = require('./binding.js')

const PREFIX = 'ROLLBACK_ERROR:'

/** An `Error` with a stable `code` (CONFIG, DRIVER, NOT_FOUND, VERIFICATION, LOCKED...) and the component it concerns. */
class RollbackError extends Error {
  constructor(message, code, component) {
    super(message)
    this.name = 'RollbackError'
    this.code = code
    this.component = component ?? null
  }
}

// napi's own argument-conversion failures (a string where a number belongs...) are bad input.
const NAPI_INPUT = /^(InvalidArg|\w+Expected)$/

function convert(err, site) {
  if (!(err instanceof Error)) return err
  let e
  if (typeof err.message === 'string' && err.message.startsWith(PREFIX)) {
    const info = JSON.parse(err.message.slice(PREFIX.length))
    e = new RollbackError(info.message, info.code, info.component)
  } else if (typeof err.code === 'string' && NAPI_INPUT.test(err.code)) {
    e = new RollbackError(err.message, 'CONFIG', null)
  } else {
    return err
  }
  // A rejection's native stack says nothing; point at the caller instead.
  if (site) e.stack = `${e.name}: ${e.message}${site.stack.slice(site.stack.indexOf('\n'))}`
  return e
}

function wrapSync(fn) {
  return function (...args) {
    try {
      return fn.apply(this, args)
    } catch (err) {
      throw convert(err)
    }
  }
}

/** What Node's own APIs reject with for an aborted `signal`: name `AbortError`, code `ABORT_ERR`, the reason as `cause`. */
class AbortError extends Error {
  constructor(reason) {
    super('The operation was aborted', { cause: reason })
    this.name = 'AbortError'
    this.code = 'ABORT_ERR'
  }
}

// A throwing progress callback, or one whose promise rejects, must not take the
// process down in the middle of a rollback (an uncaught exception or an unhandled
// rejection would, leaving the lock and an unfinished rollback): it becomes a warning.
function guardEvents(args) {
  return args.map((a) => {
    if (a === null || typeof a !== 'object' || typeof a.onEvent !== 'function') return a
    const onEvent = a.onEvent
    const warn = (event, err) =>
      process.emitWarning(`onEvent failed on ${event.kind}: ${err && err.stack ? err.stack : err}`, 'RollbackWarning')
    return {
      ...a,
      onEvent: (event) => {
        try {
          const r = onEvent(event)
          if (r !== null && typeof r === 'object' && typeof r.then === 'function') r.then(undefined, (err) => warn(event, err))
        } catch (err) {
          warn(event, err)
        }
      },
    }
  })
}

// As Node's own APIs do: a signal already aborted rejects at once, before anything
// (lock, safety snapshot, journal) is touched.
function abortedSignal(args) {
  for (const a of args) {
    if (a !== null && typeof a === 'object' && a.signal && a.signal.aborted) return a.signal
  }
  return null
}

function wrapAsync(fn) {
  return function wrapped(...args) {
    const site = {}
    Error.captureStackTrace(site, wrapped)
    const aborted = abortedSignal(args)
    if (aborted) return Promise.reject(new AbortError(aborted.reason))
    let p
    try {
      p = fn.apply(this, guardEvents(args))
    } catch (err) {
      return Promise.reject(convert(err, site))
    }
    return p.then(undefined, (err) => {
      throw convert(err, site)
    })
  }
}

const proto = native.Stack.prototype
for (const name of Object.getOwnPropertyNames(proto)) {
  const d = Object.getOwnPropertyDescriptor(proto, name)
  if (name === 'constructor' || typeof d.value !== 'function') continue
  d.value = name === 'assess' ? wrapSync(d.value) : wrapAsync(d.value)
  Object.defineProperty(proto, name, d)
}

// napi's static methods cannot be redefined; a subclass carries the wrapped ones, and
// instances made by the native class count as instances of it.
class Stack extends native.Stack {
  static [Symbol.hasInstance](x) {
    return x instanceof native.Stack
  }
}
for (const [name, wrap] of [['load', wrapAsync], ['fromToml', wrapSync], ['fromConfig', wrapSync]]) {
  const fn = native.Stack[name]
  Object.defineProperty(Stack, name, { value: wrap((...args) => fn.apply(native.Stack, args)), writable: true, configurable: true })
}

function isRollbackError(e) {
  return e instanceof RollbackError
}

module.exports.Stack = Stack
module.exports.assess = wrapSync(native.assess)
module.exports.RollbackError = RollbackError
module.exports.AbortError = AbortError
module.exports.isRollbackError = isRollbackError
module.exports.__napiBindingTarget = native.__napiBindingTarget
