//! `rollback.RollbackError` and its subclasses, from the core's `ErrorKind`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use rollback_core as rb;

create_exception!(
    rollback,
    RollbackError,
    PyException,
    "Base of every error raised by rollback.\n\nAttributes: `component` (the component concerned, or None), `code` (stable short name: CONFIG, NOT_FOUND, DRIVER, VERIFICATION, LOCKED, TIMEOUT, CORRUPT, UNSUPPORTED, PERMISSION_DENIED, CANCELLED), `kind` (the core's error kind, snake_case) and `temporary` (retrying may succeed)."
);
create_exception!(
    rollback,
    ConfigError,
    RollbackError,
    "The configuration or an argument is invalid (file, line and key are in the message). Nothing was changed."
);
create_exception!(
    rollback,
    DriverError,
    RollbackError,
    "A driver or the store could not do its work: a server or tool unreachable, permission denied, a timeout, a corrupt artifact, an unsupported operation."
);
create_exception!(
    rollback,
    SnapshotNotFound,
    RollbackError,
    "No snapshot (or record, or component) by that name: check `Stack.list()` / `Stack.history()`."
);
create_exception!(
    rollback,
    VerificationError,
    RollbackError,
    "The current state does not equal the snapshot, or a health gate failed."
);
create_exception!(
    rollback,
    LockedError,
    RollbackError,
    "Another rollback holds the lock of this stack; wait for it, or resume it if its process died."
);

fn kind_name(k: rb::ErrorKind) -> &'static str {
    match k {
        rb::ErrorKind::ConfigInvalid => "config_invalid",
        rb::ErrorKind::NotFound => "not_found",
        rb::ErrorKind::Unsupported => "unsupported",
        rb::ErrorKind::PermissionDenied => "permission_denied",
        rb::ErrorKind::Locked => "locked",
        rb::ErrorKind::Timeout => "timeout",
        rb::ErrorKind::Corrupt => "corrupt",
        rb::ErrorKind::VerificationFailed => "verification_failed",
        rb::ErrorKind::Unreachable => "unreachable",
        rb::ErrorKind::Cancelled => "cancelled",
        _ => "unexpected",
    }
}

/// The Python exception of a core error, with `component`, `code`, `kind` and
/// `temporary` set on it.
pub fn to_py(py: Python<'_>, e: rb::Error) -> PyErr {
    let msg = e.to_string();
    let err = match e.kind() {
        rb::ErrorKind::ConfigInvalid => ConfigError::new_err(msg),
        rb::ErrorKind::NotFound => SnapshotNotFound::new_err(msg),
        rb::ErrorKind::VerificationFailed => VerificationError::new_err(msg),
        rb::ErrorKind::Locked => LockedError::new_err(msg),
        rb::ErrorKind::Cancelled => RollbackError::new_err(msg),
        _ => DriverError::new_err(msg),
    };
    let v = err.value(py);
    // Attributes on an exception instance cannot fail short of memory exhaustion.
    let _ = v.setattr("component", e.component());
    let _ = v.setattr("code", e.kind().code());
    let _ = v.setattr("kind", kind_name(e.kind()));
    let _ = v.setattr("temporary", e.is_temporary());
    err
}

/// A `ConfigError` for a bad argument.
pub fn config(py: Python<'_>, message: impl Into<String>) -> PyErr {
    to_py(py, rb::Error::config(message))
}

/// Registers the exception classes, with class-level defaults for the attributes
/// so that instances raised from Python code have them too.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let base = py.get_type::<RollbackError>();
    base.setattr("component", py.None())?;
    base.setattr("code", py.None())?;
    base.setattr("kind", py.None())?;
    base.setattr("temporary", false)?;
    m.add("RollbackError", base)?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("DriverError", py.get_type::<DriverError>())?;
    m.add("SnapshotNotFound", py.get_type::<SnapshotNotFound>())?;
    m.add("VerificationError", py.get_type::<VerificationError>())?;
    m.add("LockedError", py.get_type::<LockedError>())?;
    Ok(())
}
