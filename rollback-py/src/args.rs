//! Arguments from Python, checked before anything runs.
//!
//! PyO3's own conversions let through what a tool that changes production systems must
//! not take: `True` is an `int` and a number (`keep=True` meant `keep=1`,
//! `duration=True` watched for a second, `phases=[True]` meant phase 1), and the rest
//! fail as `TypeError`/`OverflowError` (`keep=-1`, `phases=[2**70]`) instead of the
//! library's error. Every argument goes through here: a bad one is a `ConfigError`
//! naming it, and nothing starts. What the values mean (a phase that exists, a level's
//! name) is still the core's to check.

use std::path::PathBuf;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use rollback_core as rb;

use crate::errors::config;

/// How deep a config dict may nest; a cycle would otherwise recurse forever.
const MAX_DEPTH: usize = 64;

/// `an int`, `a list`... of a value, for messages.
fn kind(v: &Bound<'_, PyAny>) -> String {
    if v.is_none() {
        return "None".into();
    }
    let name = v.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "object".into());
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {name}")
}

fn present<'a, 'py>(v: Option<&'a Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
    v.filter(|v| !v.is_none())
}

/// A required string.
pub fn string(py: Python<'_>, name: &str, v: &Bound<'_, PyAny>) -> PyResult<String> {
    match v.cast::<PyString>() {
        Ok(s) => Ok(s.to_cow()?.into_owned()),
        Err(_) => Err(config(py, format!("`{name}` must be a string, not {}", kind(v)))),
    }
}

/// An optional string: None leaves it unset.
pub fn opt_string(py: Python<'_>, name: &str, v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    present(v).map(|v| string(py, name, v)).transpose()
}

/// `True` or `False` (not 1, not "yes"); None: `default`.
pub fn flag(py: Python<'_>, name: &str, v: Option<&Bound<'_, PyAny>>, default: bool) -> PyResult<bool> {
    match present(v) {
        None => Ok(default),
        Some(v) => match v.cast::<PyBool>() {
            Ok(b) => Ok(b.is_true()),
            Err(_) => Err(config(py, format!("`{name}` must be True or False, not {}", kind(v)))),
        },
    }
}

/// `v` as an int: a Python int other than a bool, or an integer of another library
/// (`numpy.int64`) that says so through `__index__`, as `operator.index` reads it.
fn whole<'py>(v: &Bound<'py, PyAny>) -> Option<Bound<'py, PyInt>> {
    if v.is_instance_of::<PyBool>() || v.is_instance_of::<PyFloat>() {
        return None;
    }
    if let Ok(i) = v.cast::<PyInt>() {
        return Some(i.clone());
    }
    if !v.hasattr("__index__").unwrap_or(false) {
        return None;
    }
    v.call_method0("__index__").ok()?.cast_into::<PyInt>().ok()
}

/// `v` as a number: a float, or an int as [`whole`] reads it. An int too large for a
/// float is infinite, which every user of a number refuses naming it.
fn real(v: &Bound<'_, PyAny>) -> Option<f64> {
    if v.is_instance_of::<PyFloat>() {
        return v.extract::<f64>().ok();
    }
    whole(v).map(|i| i.extract::<f64>().unwrap_or(f64::INFINITY))
}

/// An int that is not a bool, as an `i64`.
fn int(py: Python<'_>, name: &str, v: &Bound<'_, PyAny>) -> PyResult<i64> {
    let Some(i) = whole(v) else {
        return Err(config(py, format!("`{name}` must be a whole number, not {}", kind(v))));
    };
    i.extract::<i64>().map_err(|_| config(py, format!("`{name}` = {i} is out of range")))
}

/// An optional count from `min` up; None leaves it unset.
pub fn count(py: Python<'_>, name: &str, v: Option<&Bound<'_, PyAny>>, min: i64) -> PyResult<Option<usize>> {
    let Some(v) = present(v) else { return Ok(None) };
    let n = int(py, name, v)?;
    if n < min {
        return Err(config(py, format!("`{name}` = {n} must be at least {min}")));
    }
    usize::try_from(n).map(Some).map_err(|_| config(py, format!("`{name}` = {n} is out of range")))
}

/// A number (int or float, not a bool). Its range is the core's to check.
pub fn number(py: Python<'_>, name: &str, v: &Bound<'_, PyAny>) -> PyResult<f64> {
    real(v).ok_or_else(|| config(py, format!("`{name}` must be a number, not {}", kind(v))))
}

/// An optional length of time in milliseconds: a number, or a `timedelta` (its
/// milliseconds, fractions kept); None leaves it unset. Its range is the core's to check.
pub fn opt_millis(py: Python<'_>, name: &str, v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
    let Some(v) = present(v) else { return Ok(None) };
    if let Ok(td) = v.extract::<chrono::Duration>() {
        // Microseconds are the finest a `timedelta` holds; as a float they are exact
        // for any latency a monitor reports.
        let us = td.num_microseconds().ok_or_else(|| config(py, format!("`{name}` is out of range")))?;
        return Ok(Some(us as f64 / 1000.0));
    }
    real(v)
        .map(Some)
        .ok_or_else(|| config(py, format!("`{name}` must be a number of milliseconds or a timedelta, not {}", kind(v))))
}

/// The items of a list, tuple or other iterable that is not a string, bytes or a dict
/// (`components="db"` would otherwise be the components `d` and `b`).
fn items<'py>(py: Python<'py>, name: &str, v: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let refused = v.is_instance_of::<PyString>()
        || v.is_instance_of::<pyo3::types::PyBytes>()
        || v.is_instance_of::<pyo3::types::PyByteArray>()
        || v.is_instance_of::<PyDict>();
    let iter = if refused { None } else { v.try_iter().ok() };
    let Some(iter) = iter else {
        return Err(config(py, format!("`{name}` must be a list, not {}", kind(v))));
    };
    iter.collect()
}

/// An optional list of strings; None leaves it unset.
pub fn strings(py: Python<'_>, name: &str, v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<String>>> {
    let Some(v) = present(v) else { return Ok(None) };
    items(py, name, v)?
        .iter()
        .enumerate()
        .map(|(i, x)| string(py, &format!("{name}[{i}]"), x))
        .collect::<PyResult<_>>()
        .map(Some)
}

/// An optional list of whole numbers; None leaves it unset.
pub fn ints(py: Python<'_>, name: &str, v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<i64>>> {
    let Some(v) = present(v) else { return Ok(None) };
    items(py, name, v)?
        .iter()
        .enumerate()
        .map(|(i, x)| int(py, &format!("{name}[{i}]"), x))
        .collect::<PyResult<_>>()
        .map(Some)
}

/// An optional callable; None leaves it unset.
pub fn callback(py: Python<'_>, name: &str, v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Py<PyAny>>> {
    match present(v) {
        None => Ok(None),
        Some(v) if v.is_callable() => Ok(Some(v.clone().unbind())),
        Some(v) => Err(config(py, format!("`{name}` must be callable, not {}", kind(v)))),
    }
}

/// A path: a string or an `os.PathLike` (`pathlib.Path`).
pub fn path(py: Python<'_>, name: &str, v: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    let fspath = py.import("os")?.getattr("fspath")?;
    let s =
        fspath.call1((v,)).ok().filter(|s| s.is_instance_of::<PyString>()).ok_or_else(|| {
            config(py, format!("`{name}` must be a path (a string or a pathlib.Path), not {}", kind(v)))
        })?;
    Ok(PathBuf::from(s.cast::<PyString>()?.to_cow()?.into_owned()))
}

/// An optional path; None leaves it unset.
pub fn opt_path(py: Python<'_>, name: &str, v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<PathBuf>> {
    present(v).map(|v| path(py, name, v)).transpose()
}

/// When a duration of 0 is refused.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Zero {
    Allowed,
    Refused,
}

/// An optional duration: `"10m"`, a `timedelta`, or a number of seconds (not a bool);
/// None leaves it unset. Negative, NaN, above ten years, and 0 where `zero` refuses it
/// are errors naming `name`.
pub fn duration(py: Python<'_>, name: &str, v: Option<&Bound<'_, PyAny>>, zero: Zero) -> PyResult<Option<Duration>> {
    let Some(v) = present(v) else { return Ok(None) };
    let d = if let Ok(s) = v.cast::<PyString>() {
        let s = s.to_cow()?;
        rb::config::parse_duration(&s).map_err(|e| config(py, format!("`{name}`: {e}")))?
    } else if let Ok(td) = v.extract::<chrono::Duration>() {
        if td < chrono::Duration::zero() {
            return Err(config(py, format!("`{name}` must not be negative")));
        }
        let secs = td.num_milliseconds() as f64 / 1000.0;
        rb::config::duration_from_secs(secs).map_err(|e| config(py, format!("`{name}`: {e}")))?
    } else if let Some(secs) = real(v) {
        rb::config::duration_from_secs(secs).map_err(|e| config(py, format!("`{name}`: {e}")))?
    } else {
        return Err(config(
            py,
            format!("`{name}` must be a duration (\"10m\", a timedelta or a number of seconds), not {}", kind(v)),
        ));
    };
    if zero == Zero::Refused && d.is_zero() {
        return Err(config(py, format!("`{name}` must be more than 0")));
    }
    Ok(Some(d))
}

/// A config dict (`Stack.from_dict`) as JSON. Paths (`os.PathLike`) become strings and
/// a `timedelta` its seconds; what TOML cannot hold (NaN, an int beyond 64 bits, a set,
/// a dict with a key that is not a string) is an error naming the key.
pub fn config_json(py: Python<'_>, name: &str, v: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    if !v.is_instance_of::<PyDict>() {
        return Err(config(py, format!("`{name}` must be a dict like {{\"component\": [...]}}, not {}", kind(v))));
    }
    json_at(py, "", v, 0)
}

fn json_at(py: Python<'_>, path: &str, v: &Bound<'_, PyAny>, depth: usize) -> PyResult<serde_json::Value> {
    use serde_json::Value;
    let at = || if path.is_empty() { "the config".to_string() } else { format!("`{path}`") };
    if depth > MAX_DEPTH {
        return Err(config(py, format!("{} nests deeper than {MAX_DEPTH} levels (a cycle?)", at())));
    }
    if v.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Some(i) = whole(v) {
        return i.extract::<i64>().map(Value::from).map_err(|_| config(py, format!("{} = {i} is out of range", at())));
    }
    if v.is_instance_of::<PyFloat>() {
        let f = v.extract::<f64>()?;
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| config(py, format!("{} = {v} is not a finite number", at())));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        let mut out = serde_json::Map::new();
        for (k, x) in d.iter() {
            let Ok(k) = k.cast::<PyString>() else {
                return Err(config(py, format!("{} has a key that is not a string: {}", at(), kind(&k))));
            };
            let k = k.to_cow()?.into_owned();
            let sub = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            out.insert(k, json_at(py, &sub, &x, depth + 1)?);
        }
        return Ok(Value::Object(out));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let mut out = Vec::new();
        for (i, x) in v.try_iter()?.enumerate() {
            out.push(json_at(py, &format!("{path}[{i}]"), &x?, depth + 1)?);
        }
        return Ok(Value::Array(out));
    }
    if let Ok(td) = v.extract::<chrono::Duration>() {
        let secs = td.num_milliseconds() as f64 / 1000.0;
        return serde_json::Number::from_f64(secs)
            .map(Value::Number)
            .ok_or_else(|| config(py, format!("{} is not a duration", at())));
    }
    if v.is_instance(&py.import("os")?.getattr("PathLike")?)? {
        return Ok(Value::String(path_text(py, &at(), v)?));
    }
    Err(config(py, format!("{} is {}, which a config cannot hold", at(), kind(v))))
}

fn path_text(py: Python<'_>, at: &str, v: &Bound<'_, PyAny>) -> PyResult<String> {
    let s = py.import("os")?.getattr("fspath")?.call1((v,))?;
    match s.cast::<PyString>() {
        Ok(s) => Ok(s.to_cow()?.into_owned()),
        Err(_) => Err(config(py, format!("{at} is a path of bytes; give it as a string"))),
    }
}
