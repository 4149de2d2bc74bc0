//! Forwards the library's `tracing` events to Python's `logging`, logger `rollback`.
//!
//! Only events of the library's own targets cross (a driver's dependencies are
//! not the operator's business). Fields of the enclosing spans, such as the
//! `component` and `action` of a rollback step, are appended to the message and the
//! component is also given to `logging` as `extra={"component": ...}`.

use std::fmt::Write as _;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
    component: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            name => {
                if name == "component" {
                    self.component = Some(value.to_string());
                }
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name => {
                let shown = format!("{value:?}");
                if name == "component" {
                    self.component = Some(shown.clone());
                }
                let _ = write!(self.rest, " {name}={shown}");
            }
        }
    }
}

struct PyLogLayer;

fn ours(m: &Metadata<'_>) -> bool {
    m.target().starts_with("rollback")
}

fn py_level(l: &Level) -> i32 {
    match *l {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

impl<S> Layer<S> for PyLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, m: &'static Metadata<'static>) -> Interest {
        if ours(m) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(f);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let mut component = f.component.take();
        let mut text = f.message;
        text.push_str(&f.rest);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(sf) = span.extensions().get::<Fields>() {
                    if component.is_none() {
                        component.clone_from(&sf.component);
                    }
                    text.push_str(&sf.rest);
                }
            }
        }
        let level = py_level(event.metadata().level());
        // None: nothing to log to while the interpreter exits.
        let _ = crate::runtime::with_python(|py| {
            let r = (|| -> PyResult<()> {
                let logger = LOGGER.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
                    Ok(py.import("logging")?.call_method1("getLogger", ("rollback",))?.unbind())
                })?;
                let logger = logger.bind(py);
                if !logger.call_method1("isEnabledFor", (level,))?.is_truthy()? {
                    return Ok(());
                }
                let kwargs = PyDict::new(py);
                let extra = PyDict::new(py);
                extra.set_item("component", component)?;
                kwargs.set_item("extra", extra)?;
                logger.call_method("log", (level, "%s", text), Some(&kwargs))?;
                Ok(())
            })();
            if let Err(e) = r {
                e.write_unraisable(py, None);
            }
        });
    }
}

/// Installs the bridge as this module's `tracing` subscriber (once per process).
pub fn install() {
    let subscriber = tracing_subscriber::registry().with(PyLogLayer);
    // Fails only when already installed (the module imported twice in one process).
    let _ = tracing::subscriber::set_global_default(subscriber);
}
