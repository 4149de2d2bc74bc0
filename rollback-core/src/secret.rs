//! Secrets: `${ENV}` expansion and the redactor that keeps them out of every output.

use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};

/// Replaces every known secret value, and the password part of any URL, with `***`.
///
/// Cloning shares the set, so every part of a stack redacts with the same secrets.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.secrets.read().map(|s| s.len()).unwrap_or(0);
        write!(f, "Redactor({n} secrets)")
    }
}

impl Redactor {
    /// Remembers a secret value (values shorter than 3 characters are too common to redact).
    pub fn add(&self, secret: &str) {
        if secret.len() < 3 {
            return;
        }
        if let Ok(mut s) = self.secrets.write() {
            if !s.iter().any(|x| x == secret) {
                s.push(secret.to_string());
                // Longest first, so a secret containing another is replaced whole.
                s.sort_by_key(|x| std::cmp::Reverse(x.len()));
            }
        }
    }

    /// The text with every secret and URL password replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = redact_url_passwords(text);
        if let Ok(s) = self.secrets.read() {
            for secret in s.iter() {
                if out.contains(secret.as_str()) {
                    out = out.replace(secret.as_str(), "***");
                }
            }
        }
        out
    }
}

/// `scheme://user:password@host` → `scheme://user:***@host`, anywhere in the text.
pub fn redact_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let end = tail.find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'').unwrap_or(tail.len());
        let authority = &tail[..end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some(colon) = userinfo.find(':') {
                out.push_str(&userinfo[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
                rest = &tail[end..];
                continue;
            }
        }
        out.push_str(authority);
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Expands `${NAME}` from the environment, registering each value as a secret.
/// `$${` escapes a literal `${`.
pub fn expand_env(value: &str, redactor: &Redactor, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find("${") {
        if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let close = after.find('}').ok_or_else(|| Error::config(format!("unclosed `${{` in `{value}`")))?;
        let name = &after[..close];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::config(format!("`${{{name}}}` is not a valid environment variable reference")));
        }
        let v = lookup(name).ok_or_else(|| Error::config(format!("environment variable `{name}` is not set")))?;
        redactor.add(&v);
        out.push_str(&v);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Standard base64 with padding (Dokku's `--encoded` values): one small function
/// rather than a dependency.
#[cfg(any(test, feature = "driver-dokku"))]
pub(crate) fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() { T[((n >> shift) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(
            redact_url_passwords("connect postgres://u:hunter2@h:5432/db failed"),
            "connect postgres://u:***@h:5432/db failed"
        );
        assert_eq!(redact_url_passwords("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redact_url_passwords("http://a@b/"), "http://a@b/");
    }

    #[test]
    fn env_values_become_secrets() {
        let r = Redactor::default();
        let s = expand_env("pw=${PW};x", &r, &|n| (n == "PW").then(|| "s3cret".into())).unwrap();
        assert_eq!(s, "pw=s3cret;x");
        assert_eq!(r.redact("oops s3cret leaked"), "oops *** leaked");
        let e = expand_env("${MISSING}", &r, &|_| None).unwrap_err();
        assert!(e.to_string().contains("MISSING"));
        assert_eq!(expand_env("$${LIT}", &r, &|_| None).unwrap(), "${LIT}");
    }
}
