//! `rollback.RollbackError` and its subclasses, from the core's `ErrorKind`.
//!
//! Each class also derives from the built-in exception a Python user already catches
//! for that kind of failure (`ValueError` for bad input, `LookupError` for a missing
//! snapshot, `TimeoutError`, `PermissionError`, `ConnectionError`...), so code that
//! does not know this library still handles its errors the usual way. PyO3's
//! `create_exception!` takes one base only: the classes are made with `type()` when
//! the module is imported.

use pyo3::exceptions::{PyException, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use rollback_core as rb;

/// Which class a core error becomes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Base,
    Config,
    Driver,
    NotFound,
    Verification,
    Locked,
    Timeout,
    PermissionDenied,
    Unreachable,
    Corrupt,
    Unsupported,
}

/// Name, base classes (ours by `Class`, then a builtin's name) and docstring of each class.
struct Spec {
    class: Class,
    name: &'static str,
    parent: Option<Class>,
    builtin: Option<&'static str>,
    doc: &'static str,
}

const SPECS: &[Spec] = &[
    Spec {
        class: Class::Base,
        name: "RollbackError",
        parent: None,
        builtin: None,
        doc: "Base of every error raised by rollback.\n\nAttributes: `component` (the component concerned, or None), `code` (stable short name: CONFIG, NOT_FOUND, DRIVER, VERIFICATION, LOCKED, TIMEOUT, CORRUPT, UNSUPPORTED, PERMISSION_DENIED, CANCELLED), `kind` (the core's error kind, snake_case) and `temporary` (retrying may succeed).",
    },
    Spec {
        class: Class::Config,
        name: "ConfigError",
        parent: Some(Class::Base),
        builtin: Some("ValueError"),
        doc: "The configuration or an argument is invalid (file, line and key are in the message). Nothing was changed. Also a `ValueError`.",
    },
    Spec {
        class: Class::NotFound,
        name: "SnapshotNotFoundError",
        parent: Some(Class::Base),
        builtin: Some("LookupError"),
        doc: "No snapshot (or record, or component) by that name: check `Stack.list()` / `Stack.history()`. Also a `LookupError`; `SnapshotNotFound` is the same class.",
    },
    Spec {
        class: Class::Verification,
        name: "VerificationError",
        parent: Some(Class::Base),
        builtin: None,
        doc: "The current state does not equal the snapshot, or a health gate failed.",
    },
    Spec {
        class: Class::Locked,
        name: "LockedError",
        parent: Some(Class::Base),
        builtin: None,
        doc: "Another rollback holds the lock of this stack; wait for it, or resume it if its process died.",
    },
    Spec {
        class: Class::Driver,
        name: "DriverError",
        parent: Some(Class::Base),
        builtin: None,
        doc: "A driver or the store could not do its work: a server or tool unreachable, permission denied, a timeout, a corrupt artifact, an unsupported operation. The subclasses name the first four.",
    },
    Spec {
        class: Class::Timeout,
        name: "RollbackTimeoutError",
        parent: Some(Class::Driver),
        builtin: Some("TimeoutError"),
        doc: "A step, a connection or a command ran out of time. Also a `TimeoutError`.",
    },
    Spec {
        class: Class::PermissionDenied,
        name: "PermissionDeniedError",
        parent: Some(Class::Driver),
        builtin: Some("PermissionError"),
        doc: "A server, a file or a tool refused access. Also a `PermissionError`.",
    },
    Spec {
        class: Class::Unreachable,
        name: "UnreachableError",
        parent: Some(Class::Driver),
        builtin: Some("ConnectionError"),
        doc: "A server or a tool could not be reached. Also a `ConnectionError`.",
    },
    Spec {
        class: Class::Corrupt,
        name: "CorruptError",
        parent: Some(Class::Driver),
        builtin: None,
        doc: "A stored artifact, manifest or journal does not read back as written (checksum, format).",
    },
    Spec {
        class: Class::Unsupported,
        name: "UnsupportedError",
        parent: Some(Class::Driver),
        builtin: Some("NotImplementedError"),
        doc: "The driver cannot do what was asked (a scope or an operation it lacks). Also a `NotImplementedError`.",
    },
];

/// The classes, made once per interpreter when the module is imported.
static CLASSES: PyOnceLock<Vec<(Class, Py<PyType>)>> = PyOnceLock::new();

fn class_of(k: rb::ErrorKind) -> Class {
    match k {
        rb::ErrorKind::ConfigInvalid => Class::Config,
        rb::ErrorKind::NotFound => Class::NotFound,
        rb::ErrorKind::VerificationFailed => Class::Verification,
        rb::ErrorKind::Locked => Class::Locked,
        rb::ErrorKind::Timeout => Class::Timeout,
        rb::ErrorKind::PermissionDenied => Class::PermissionDenied,
        rb::ErrorKind::Unreachable => Class::Unreachable,
        rb::ErrorKind::Corrupt => Class::Corrupt,
        rb::ErrorKind::Unsupported => Class::Unsupported,
        rb::ErrorKind::Cancelled => Class::Base,
        _ => Class::Driver,
    }
}

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

fn make_classes(py: Python<'_>) -> PyResult<Vec<(Class, Py<PyType>)>> {
    let builtins = py.import("builtins")?;
    let type_ = builtins.getattr("type")?;
    let mut made: Vec<(Class, Py<PyType>)> = Vec::new();
    for spec in SPECS {
        let mut bases: Vec<Bound<'_, PyAny>> = Vec::new();
        match spec.parent {
            Some(p) => {
                let parent = made
                    .iter()
                    .find(|(c, _)| *c == p)
                    .ok_or_else(|| PyRuntimeError::new_err("exception classes out of order"))?;
                bases.push(parent.1.bind(py).clone().into_any());
            }
            None => bases.push(py.get_type::<PyException>().into_any()),
        }
        if let Some(b) = spec.builtin {
            bases.push(builtins.getattr(b)?);
        }
        let dict = PyDict::new(py);
        dict.set_item("__module__", "rollback")?;
        dict.set_item("__doc__", spec.doc)?;
        if spec.class == Class::Base {
            // Class-level defaults, so that instances raised from Python code have them too.
            dict.set_item("component", py.None())?;
            dict.set_item("code", py.None())?;
            dict.set_item("kind", py.None())?;
            dict.set_item("temporary", false)?;
        }
        let cls = type_.call1((spec.name, PyTuple::new(py, bases)?, dict))?.cast_into::<PyType>()?;
        made.push((spec.class, cls.unbind()));
    }
    Ok(made)
}

fn class(py: Python<'_>, c: Class) -> Option<Bound<'_, PyType>> {
    CLASSES.get(py)?.iter().find(|(k, _)| *k == c).map(|(_, t)| t.bind(py).clone())
}

/// The Python exception of a core error, with `component`, `code`, `kind` and
/// `temporary` set on it.
pub fn to_py(py: Python<'_>, e: rb::Error) -> PyErr {
    let msg = e.to_string();
    let Some(cls) = class(py, class_of(e.kind())) else {
        // Only before the module finished importing, which raises nothing of ours.
        return PyRuntimeError::new_err(msg);
    };
    let err = PyErr::from_type(cls, (msg,));
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

/// Makes the exception classes and adds them to the module, with the names of
/// earlier versions (`SnapshotNotFound`) as aliases.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let classes = CLASSES.get_or_try_init(py, || make_classes(py))?;
    for (c, cls) in classes {
        let name = SPECS.iter().find(|s| s.class == *c).map(|s| s.name).unwrap_or_default();
        m.add(name, cls.bind(py))?;
    }
    if let Some(nf) = class(py, Class::NotFound) {
        m.add("SnapshotNotFound", nf)?;
    }
    Ok(())
}
