//! One error type for the whole library, with a kind callers can branch on.

use std::fmt;

/// What went wrong, in terms an operator (or a binding) can act on.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The configuration or an argument is invalid.
    ConfigInvalid,
    /// A snapshot, record, component or target does not exist.
    NotFound,
    /// The driver cannot do what was asked.
    Unsupported,
    /// The operating system or the server refused access.
    PermissionDenied,
    /// Another rollback holds the lock of this stack.
    Locked,
    /// A step ran past its deadline.
    Timeout,
    /// A stored artifact failed its checksum or cannot be parsed.
    Corrupt,
    /// The current state does not equal the snapshot.
    VerificationFailed,
    /// A server or tool could not be reached.
    Unreachable,
    /// The call was cancelled (signal, abort) at a step boundary.
    Cancelled,
    /// Anything else; the message says what.
    Unexpected,
}

impl ErrorKind {
    /// A stable short name, used as the Node error `code` and in JSON output.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::ConfigInvalid => "CONFIG",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::Unsupported => "UNSUPPORTED",
            ErrorKind::PermissionDenied => "PERMISSION_DENIED",
            ErrorKind::Locked => "LOCKED",
            ErrorKind::Timeout => "TIMEOUT",
            ErrorKind::Corrupt => "CORRUPT",
            ErrorKind::VerificationFailed => "VERIFICATION",
            ErrorKind::Unreachable => "DRIVER",
            ErrorKind::Cancelled => "CANCELLED",
            ErrorKind::Unexpected => "DRIVER",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::ConfigInvalid => "invalid input",
            ErrorKind::NotFound => "not found",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Locked => "locked",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::VerificationFailed => "verification failed",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Unexpected => "error",
        };
        f.write_str(s)
    }
}

/// The library's error: a kind, a message for a person, the component it concerns,
/// and the underlying cause.
///
/// Messages never contain secrets: drivers build them from redacted values.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    component: Option<String>,
    temporary: bool,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = &self.component {
            write!(f, "component `{c}`: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(src) = &self.source {
            let s = src.to_string();
            if !s.is_empty() && !self.message.contains(&s) {
                write!(f, ": {s}")?;
            }
        }
        Ok(())
    }
}

impl Error {
    /// A new error of `kind` with a message for a person.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), component: None, temporary: false, source: None }
    }

    /// Shorthand for [`ErrorKind::ConfigInvalid`].
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ConfigInvalid, message)
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Shorthand for [`ErrorKind::Unexpected`].
    pub fn unexpected(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unexpected, message)
    }

    /// Names the component this error concerns (kept if already set).
    pub fn with_component(mut self, component: impl Into<String>) -> Self {
        if self.component.is_none() {
            self.component = Some(component.into());
        }
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Marks the error as temporary: retrying the same call may succeed.
    pub fn set_temporary(mut self) -> Self {
        self.temporary = true;
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the component prefix or the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The component this error concerns, if any.
    pub fn component(&self) -> Option<&str> {
        self.component.as_deref()
    }

    /// True when retrying may succeed.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// Rewrites the message and cause with every known secret replaced.
    pub fn redacted(self, redactor: &crate::secret::Redactor) -> Self {
        let full_source = self.source.as_ref().map(|s| s.to_string());
        let message = redactor.redact(&self.message);
        let mut out =
            Error { kind: self.kind, message, component: self.component, temporary: self.temporary, source: None };
        if let Some(s) = full_source {
            let r = redactor.redact(&s);
            if !out.message.contains(&r) {
                out.message = format!("{}: {}", out.message, r);
            }
        }
        out
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Unexpected,
        };
        Error::new(kind, "I/O error").with_source(e)
    }
}

/// Adds a human-readable context to I/O results at the place they happen.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| {
            let base: Error = Error::from(e);
            let kind = base.kind();
            Error { kind, message: what(), component: None, temporary: false, source: base.source }
        })
    }
}
