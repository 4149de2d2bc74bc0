//! Arguments from JavaScript, checked before anything runs.
//!
//! napi's own conversions are too lenient for a tool that changes production systems:
//! a number becomes an `i64` by truncation (`phases: [1.9]` planned phase 1, `[NaN]`
//! phase 0), an options argument that is not an object reads as no options, an unknown
//! option is ignored (`{ component: ['db'] }` would roll back every component), and its
//! errors name neither the argument nor the key. Every argument goes through here
//! first: a bad one is refused with a `CONFIG` error that names it, and nothing starts.
//! What the values mean (a phase that exists, a level's name) is still the core's to
//! check.

use napi::bindgen_prelude::*;
use rollback_core as rb;

use crate::to_napi;

/// The largest integer a JS number holds exactly (`Number.MAX_SAFE_INTEGER`).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// How deep a config object may nest; a cycle would otherwise recurse forever.
const MAX_DEPTH: usize = 64;

pub(crate) fn bad(message: impl Into<String>) -> napi::Error {
    to_napi(rb::Error::config(message))
}

/// What an option holds.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// A string.
    Str,
    /// `true` or `false`.
    Bool,
    /// A number (its range is checked where it is used).
    Number,
    /// A whole number from 1 up.
    Count,
    /// An array of strings.
    Strs,
    /// An array of whole numbers.
    Ints,
    /// A function.
    Func,
    /// An `AbortSignal`.
    Signal,
}

impl Kind {
    fn expected(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Bool => "true or false",
            Kind::Number => "a number",
            Kind::Count => "a whole number from 1",
            Kind::Strs => "an array of strings",
            Kind::Ints => "an array of whole numbers",
            Kind::Func => "a function",
            Kind::Signal => "an AbortSignal",
        }
    }
}

/// One key of an options object.
pub(crate) struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
}

/// An optional key: `undefined` and `null` leave it unset.
pub(crate) const fn opt(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, required: false }
}

/// A key that must be there.
pub(crate) const fn req(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, required: true }
}

/// `a number`, `null`, `an array`... for messages.
fn describe(v: &Unknown<'_>) -> String {
    match v.get_type() {
        Ok(ValueType::Undefined) => "undefined".into(),
        Ok(ValueType::Null) => "null".into(),
        Ok(ValueType::Boolean) => match bool::from_unknown(*v) {
            Ok(b) => format!("{b}"),
            Err(_) => "a boolean".into(),
        },
        Ok(ValueType::Number) => match f64::from_unknown(*v) {
            Ok(n) => format!("the number {}", number(n)),
            Err(_) => "a number".into(),
        },
        Ok(ValueType::String) => "a string".into(),
        Ok(ValueType::Symbol) => "a symbol".into(),
        Ok(ValueType::Function) => "a function".into(),
        Ok(ValueType::BigInt) => "a bigint".into(),
        Ok(ValueType::Object) if v.is_array().unwrap_or(false) => "an array".into(),
        Ok(ValueType::Object) => "an object".into(),
        _ => "a value of another kind".into(),
    }
}

/// A number as JavaScript prints it (`NaN`, `Infinity`, `1.9`, `3`).
fn number(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{n}")
    }
}

fn is_nullish(v: &Unknown<'_>) -> Result<bool> {
    Ok(matches!(v.get_type()?, ValueType::Undefined | ValueType::Null))
}

/// A whole number a JS number holds exactly.
fn whole(n: f64) -> bool {
    n.is_finite() && n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER
}

/// A required string argument.
pub(crate) fn string(name: &str, v: Unknown<'_>) -> Result<String> {
    if v.get_type()? != ValueType::String {
        return Err(bad(format!("`{name}` must be a string, not {}", describe(&v))));
    }
    String::from_unknown(v)
}

/// An optional string argument: `undefined` and `null` leave it unset.
pub(crate) fn opt_string(name: &str, v: Option<Unknown<'_>>) -> Result<Option<String>> {
    match v {
        Some(v) if !is_nullish(&v)? => string(name, v).map(Some),
        _ => Ok(None),
    }
}

/// A required object argument of the given keys, converted to `T`.
pub(crate) fn object<T: FromNapiValue>(name: &str, v: Unknown<'_>, fields: &[Field]) -> Result<T> {
    let checked = check_object(name, &v, fields)?;
    T::from_unknown(checked.to_unknown()).map_err(|e| bad(format!("`{name}`: {}", e.reason)))
}

/// An optional options argument (`undefined` and `null`: none) of the given keys.
pub(crate) fn options<T: FromNapiValue>(name: &str, v: Option<Unknown<'_>>, fields: &[Field]) -> Result<Option<T>> {
    match v {
        Some(v) if !is_nullish(&v)? => object(name, v, fields).map(Some),
        _ => Ok(None),
    }
}

fn plain_object<'a>(name: &str, v: &Unknown<'a>) -> Result<Object<'a>> {
    if v.get_type()? != ValueType::Object || v.is_array()? {
        return Err(bad(format!("`{name}` must be an object, not {}", describe(v))));
    }
    Object::from_unknown(*v)
}

/// Checks the object's keys and returns a copy of it with only the keys that are set:
/// napi reads a `null` array as an error rather than as unset, and reading each key
/// once means a getter cannot answer the check one thing and the conversion another.
fn check_object<'a>(name: &str, v: &Unknown<'a>, fields: &[Field]) -> Result<Object<'a>> {
    let obj = plain_object(name, v)?;
    for key in Object::keys(&obj)? {
        if fields.iter().any(|f| f.name == key) {
            continue;
        }
        // `{ ...opts, x: undefined }` sets nothing.
        let value: Unknown = obj.get_named_property(&key)?;
        if value.get_type()? != ValueType::Undefined {
            let known: Vec<&str> = fields.iter().map(|f| f.name).collect();
            return Err(bad(format!("`{name}` has an unknown key `{key}` (keys: {})", known.join(", "))));
        }
    }
    let mut checked = Object::new(&Env::from_raw(v.value().env))?;
    for f in fields {
        let value: Unknown = obj.get_named_property(f.name)?;
        if check_field(&format!("{name}.{}", f.name), &value, f)? {
            checked.set_named_property(f.name, value)?;
        }
    }
    Ok(checked)
}

/// Checks one key; whether it is set (`undefined` and `null` leave an optional key unset).
fn check_field(path: &str, v: &Unknown<'_>, f: &Field) -> Result<bool> {
    let wrong = || bad(format!("`{path}` must be {}, not {}", f.kind.expected(), describe(v)));
    let ty = v.get_type()?;
    if matches!(ty, ValueType::Undefined | ValueType::Null) {
        return if f.required { Err(wrong()) } else { Ok(false) };
    }
    check_value(path, v, ty, f)?;
    Ok(true)
}

fn check_value(path: &str, v: &Unknown<'_>, ty: ValueType, f: &Field) -> Result<()> {
    let wrong = || bad(format!("`{path}` must be {}, not {}", f.kind.expected(), describe(v)));
    match f.kind {
        Kind::Str if ty == ValueType::String => Ok(()),
        Kind::Bool if ty == ValueType::Boolean => Ok(()),
        Kind::Number if ty == ValueType::Number => Ok(()),
        Kind::Func if ty == ValueType::Function => Ok(()),
        Kind::Count if ty == ValueType::Number => {
            let n = f64::from_unknown(*v)?;
            if whole(n) && n >= 1.0 {
                Ok(())
            } else {
                Err(bad(format!("`{path}` = {} is not a whole number from 1", number(n))))
            }
        }
        Kind::Signal if ty == ValueType::Object => {
            let obj = Object::from_unknown(*v)?;
            let add: Unknown = obj.get_named_property("addEventListener")?;
            if add.get_type()? == ValueType::Function && obj.has_named_property("aborted")? {
                Ok(())
            } else {
                Err(wrong())
            }
        }
        Kind::Strs | Kind::Ints if ty == ValueType::Object && v.is_array()? => {
            let arr = Array::from_unknown(*v)?;
            for i in 0..arr.len() {
                let item: Unknown = arr.get_element(i)?;
                let at = format!("{path}[{i}]");
                let ty = item.get_type()?;
                match f.kind {
                    Kind::Strs if ty != ValueType::String => {
                        return Err(bad(format!("`{at}` must be a string, not {}", describe(&item))));
                    }
                    Kind::Ints if ty != ValueType::Number => {
                        return Err(bad(format!("`{at}` must be a whole number, not {}", describe(&item))));
                    }
                    Kind::Ints => {
                        let n = f64::from_unknown(item)?;
                        if !whole(n) {
                            return Err(bad(format!("`{at}` = {} is not a whole number", number(n))));
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        _ => Err(wrong()),
    }
}

/// A config object (`Stack.fromConfig`) as JSON, refusing what TOML cannot hold
/// (`NaN`, functions, symbols, cycles) with the path of the key; `undefined` leaves a
/// key out, as `JSON.stringify` does.
pub(crate) fn json(name: &str, v: Unknown<'_>) -> Result<serde_json::Value> {
    plain_object(name, &v)?;
    json_at(name, v, 0)?.ok_or_else(|| bad(format!("`{name}` must be an object")))
}

fn json_at(path: &str, v: Unknown<'_>, depth: usize) -> Result<Option<serde_json::Value>> {
    use serde_json::Value;
    if depth > MAX_DEPTH {
        return Err(bad(format!("`{path}` nests deeper than {MAX_DEPTH} levels (a cycle?)")));
    }
    let not_toml = || bad(format!("`{path}` is {}, which a config cannot hold", describe(&v)));
    Ok(Some(match v.get_type()? {
        ValueType::Undefined => return Ok(None),
        ValueType::Null => Value::Null,
        ValueType::Boolean => Value::Bool(bool::from_unknown(v)?),
        ValueType::String => Value::String(String::from_unknown(v)?),
        ValueType::Number => {
            let n = f64::from_unknown(v)?;
            if whole(n) {
                // Whole numbers stay integers: `phase = 2`, not `phase = 2.0`.
                Value::from(n as i64)
            } else {
                Value::from(
                    serde_json::Number::from_f64(n)
                        .ok_or_else(|| bad(format!("`{path}` = {} is not a finite number", number(n))))?,
                )
            }
        }
        ValueType::BigInt => {
            let (n, lossless) = BigInt::from_unknown(v)?.get_i64();
            if !lossless {
                return Err(bad(format!("`{path}` is a bigint out of the range of a config integer")));
            }
            Value::from(n)
        }
        ValueType::Object if v.is_array()? => {
            let arr = Array::from_unknown(v)?;
            let mut out = Vec::with_capacity(arr.len() as usize);
            for i in 0..arr.len() {
                let at = format!("{path}[{i}]");
                // A hole or `undefined` in an array has no TOML spelling either.
                out.push(
                    json_at(&at, arr.get_element(i)?, depth + 1)?
                        .ok_or_else(|| bad(format!("`{at}` is undefined, which a config cannot hold")))?,
                );
            }
            Value::Array(out)
        }
        ValueType::Object => {
            if v.is_date()? || v.is_typedarray()? || v.is_arraybuffer()? || v.is_promise()? {
                return Err(not_toml());
            }
            let obj = Object::from_unknown(v)?;
            let mut out = serde_json::Map::new();
            for key in Object::keys(&obj)? {
                let at = format!("{path}.{key}");
                if let Some(x) = json_at(&at, obj.get_named_property(&key)?, depth + 1)? {
                    out.insert(key, x);
                }
            }
            Value::Object(out)
        }
        _ => return Err(not_toml()),
    }))
}
