// ESM entry: the same objects as the CommonJS entry.
import rollback from './index.js'

export const { Stack, assess, RollbackError, AbortError, isRollbackError } = rollback
export default rollback
