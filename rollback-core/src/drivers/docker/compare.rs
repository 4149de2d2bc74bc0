//! What differs between a running container and the captured one.
//!
//! Every field of `Config` and `HostConfig` the capture holds is compared, not a chosen
//! few: a field left out is drift that restore skips (it thinks the container equal) and
//! `verify` passes. The exceptions are listed in [`IGNORED`] with the reason for each.
//! Differences name the field; values are shown only for numbers and booleans, since
//! env, command lines, labels and log options may hold secrets.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::short_id;
use super::spec::{env_pairs, is_anonymous_volume, mount_line};

/// Fields of the create config that are not compared, and why.
const IGNORED: &[(&str, &str)] = &[
    // Compared through the image id: a recreate names the image by id, never by a tag
    // that may have moved.
    ("Config", "Image"),
    // Compared key by key below, naming keys, never values.
    ("Config", "Env"),
    ("Config", "Labels"),
    // The engine's default is the container's own short id, or the hostname of the
    // container whose network it shares: compared after normalising.
    ("Config", "Hostname"),
    ("Config", "Domainname"),
    // Compared after normalising (binding order, anonymous volumes carried by name).
    ("HostConfig", "PortBindings"),
    ("HostConfig", "Binds"),
    ("HostConfig", "Mounts"),
    // Set by the CLI from the terminal it runs in, and the path of a file the CLI writes:
    // neither is part of what runs.
    ("HostConfig", "ConsoleSize"),
    ("HostConfig", "ContainerIDFile"),
    // `container:<id>`: compared by the target's name (the id changes when it is recreated).
    ("HostConfig", "NetworkMode"),
];

/// Fields where the engine gives `null` and `0` different meanings.
const ZERO_IS_A_VALUE: &[&str] = &["MemorySwappiness"];

/// `null`, `""`, `0`, `false`, `[]` and `{}` all mean "not set": the CLI, compose and the
/// API spell an unset field in different ways.
fn unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(unset),
    }
}

fn norm(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let m: Map<String, Value> =
                o.iter().filter(|(_, x)| !unset(x)).map(|(k, x)| (k.clone(), norm(x))).collect();
            if m.is_empty() {
                Value::Null
            } else {
                Value::Object(m)
            }
        }
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
        x if unset(x) => Value::Null,
        x => x.clone(),
    }
}

const CAPABILITIES: &[&str] = &["CapAdd", "CapDrop"];

/// Maps used as sets (`{"8080/tcp": {}}`): their keys are the value.
const SETS: &[&str] = &["ExposedPorts", "Volumes"];

fn equal(key: &str, a: &Value, b: &Value) -> bool {
    if SETS.contains(&key) {
        let set =
            |v: &Value| -> BTreeSet<String> { v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default() };
        return set(a) == set(b);
    }
    if CAPABILITIES.contains(&key) {
        // `NET_ADMIN` and `CAP_NET_ADMIN` are the same capability (the CLI adds the prefix).
        let caps = |v: &Value| -> BTreeSet<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str())
                .map(|c| c.to_uppercase().trim_start_matches("CAP_").to_string())
                .collect()
        };
        return caps(a) == caps(b);
    }
    if ZERO_IS_A_VALUE.contains(&key) {
        return a == b || (a.is_null() && b.is_null());
    }
    norm(a) == norm(b)
}

fn shown(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some("unset".into()),
        _ => None,
    }
}

fn field_diff(section: &str, key: &str, cur: &Value, snap: &Value) -> String {
    match (shown(cur), shown(snap)) {
        (Some(c), Some(s)) => format!("{section}.{key} differs ({c}; snapshot {s})"),
        _ => format!("{section}.{key} differs"),
    }
}

fn keys<'a>(a: &'a Value, b: &'a Value) -> BTreeSet<&'a str> {
    let of = |v: &'a Value| v.as_object().into_iter().flat_map(|o| o.keys().map(String::as_str));
    of(a).chain(of(b)).collect()
}

/// Generic comparison of one section (`Config`, `HostConfig`).
fn section(d: &mut Vec<String>, name: &str, cur: &Value, snap: &Value) {
    for k in keys(cur, snap) {
        if IGNORED.contains(&(name, k)) {
            continue;
        }
        if !equal(k, &cur[k], &snap[k]) {
            d.push(field_diff(name, k, &cur[k], &snap[k]));
        }
    }
}

/// Hostname and domain name as set by the user: empty for the engine's defaults.
fn hostname(i: &Value) -> String {
    let h = i["Config"]["Hostname"].as_str().unwrap_or("");
    let domain = i["Config"]["Domainname"].as_str().unwrap_or("");
    // Sharing another container's network means sharing its hostname: that one's to set.
    if i["HostConfig"]["NetworkMode"].as_str().is_some_and(|m| m.starts_with("container:")) {
        return String::new();
    }
    let h = if h == short_id(i["Id"].as_str().unwrap_or("")) { "" } else { h };
    format!("{h}.{domain}")
}

/// `Binds` without the anonymous volumes a restore carries over by name (they are
/// compared by mount point in `Mounts`), in a stable order.
fn binds(i: &Value) -> BTreeSet<String> {
    i["HostConfig"]["Binds"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_str())
                .filter(|b| !b.split(':').next().is_some_and(is_anonymous_volume))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// `HostConfig.Mounts` with the source of anonymous volumes blanked, as created.
fn host_mounts(i: &Value) -> Value {
    let mut m = i["HostConfig"]["Mounts"].clone();
    if let Some(a) = m.as_array_mut() {
        for x in a.iter_mut() {
            if x["Type"] == "volume" && x["Source"].as_str().is_some_and(is_anonymous_volume) {
                x["Source"] = Value::Null;
            }
        }
    }
    norm(&m)
}

fn norm_ports(v: &Value) -> BTreeMap<String, BTreeSet<String>> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, b)| {
                    let binds = b
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|x| {
                                    format!(
                                        "{}:{}",
                                        x["HostIp"].as_str().unwrap_or(""),
                                        x["HostPort"].as_str().unwrap_or("")
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    (k.clone(), binds)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Mounts by what they are; an anonymous volume gets a new name on every create
/// unless carried over, so it is compared by mount point only.
fn mounts(i: &Value) -> BTreeSet<String> {
    i["Mounts"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|x| {
                    if x["Type"] == "volume" && x["Name"].as_str().is_some_and(is_anonymous_volume) {
                        format!("volume:<anonymous>:{}", x["Destination"].as_str().unwrap_or(""))
                    } else {
                        mount_line(x)
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Network name → (user aliases, static addresses). Aliases the engine adds (the
/// container's own id) are left out.
fn networks(i: &Value) -> BTreeMap<String, (BTreeSet<String>, Value)> {
    let id = i["Id"].as_str().unwrap_or("");
    let short = short_id(id);
    i["NetworkSettings"]["Networks"]
        .as_object()
        .map(|n| {
            n.iter()
                .map(|(name, ep)| {
                    let aliases = ep["Aliases"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str())
                                .filter(|x| *x != short && *x != id)
                                .map(String::from)
                                .collect()
                        })
                        .unwrap_or_default();
                    (name.clone(), (aliases, norm(&ep["IPAMConfig"])))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What differs between the current container and the captured one, named without
/// secret values. `cur_net` and `snap_net` are the network modes with a
/// `container:<id>` target given by name (see `DockerDriver::network_mode`).
pub(crate) fn differences(cur: &Value, snap: &Value, cur_net: &str, snap_net: &str) -> Vec<String> {
    let mut d = Vec::new();
    let (a, b) = (cur["Image"].as_str().unwrap_or(""), snap["Image"].as_str().unwrap_or(""));
    if a != b {
        d.push(format!("image {} differs from the snapshot's {}", short_id(a), short_id(b)));
    }
    let (ce, se) = (env_pairs(&cur["Config"]["Env"]), env_pairs(&snap["Config"]["Env"]));
    for k in ce.keys().chain(se.keys()).collect::<BTreeSet<_>>() {
        match (ce.get(k), se.get(k)) {
            (Some(x), Some(y)) if x != y => d.push(format!("env {k} differs")),
            (Some(_), None) => d.push(format!("env {k} was added")),
            (None, Some(_)) => d.push(format!("env {k} is missing")),
            _ => {}
        }
    }
    let (cl, sl) = (&cur["Config"]["Labels"], &snap["Config"]["Labels"]);
    for k in keys(cl, sl) {
        match (cl.get(k), sl.get(k)) {
            (Some(x), Some(y)) if x != y => d.push(format!("label {k} differs")),
            (Some(_), None) => d.push(format!("label {k} was added")),
            (None, Some(_)) => d.push(format!("label {k} is missing")),
            _ => {}
        }
    }
    if hostname(cur) != hostname(snap) {
        d.push("Config.Hostname or Config.Domainname differs".into());
    }
    section(&mut d, "Config", &cur["Config"], &snap["Config"]);
    section(&mut d, "HostConfig", &cur["HostConfig"], &snap["HostConfig"]);
    if cur_net != snap_net {
        d.push(format!("HostConfig.NetworkMode differs ({cur_net}; snapshot {snap_net})"));
    }
    if norm_ports(&cur["HostConfig"]["PortBindings"]) != norm_ports(&snap["HostConfig"]["PortBindings"]) {
        d.push("published ports differ".into());
    }
    if binds(cur) != binds(snap) || host_mounts(cur) != host_mounts(snap) || mounts(cur) != mounts(snap) {
        d.push("mounts differ".into());
    }
    let (cn, sn) = (networks(cur), networks(snap));
    if cn.keys().ne(sn.keys()) {
        d.push(format!(
            "networks differ ({} vs snapshot {})",
            cn.keys().cloned().collect::<Vec<_>>().join(","),
            sn.keys().cloned().collect::<Vec<_>>().join(",")
        ));
    } else {
        for (n, (aliases, ipam)) in &cn {
            let (sa, si) = &sn[n];
            if aliases != sa {
                d.push(format!("aliases on network {n} differ"));
            }
            if ipam != si {
                d.push(format!("static address on network {n} differs"));
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unset_spellings_are_equal_but_a_swappiness_of_zero_is_not() {
        assert!(equal("Dns", &json!([]), &Value::Null));
        assert!(equal("Memory", &json!(0), &Value::Null));
        assert!(equal("LogConfig", &json!({"Type": "json-file", "Config": {}}), &json!({"Type": "json-file"})));
        assert!(!equal("Memory", &json!(16), &json!(64)));
        assert!(!equal("MemorySwappiness", &json!(0), &Value::Null));
        assert!(!equal("ExposedPorts", &json!({"8080/tcp": {}}), &json!({"8080/tcp": {}, "9000/tcp": {}})));
        assert!(equal("Volumes", &json!({}), &Value::Null));
        assert!(equal("CapAdd", &json!(["NET_ADMIN", "SYS_TIME"]), &json!(["CAP_SYS_TIME", "CAP_NET_ADMIN"])));
    }

    #[test]
    fn a_limit_is_named_with_its_values_and_a_command_without() {
        let snap = json!({"Id": "a", "Image": "i", "Config": {"Cmd": ["x", "secret"]}, "HostConfig": {"Memory": 64}});
        let cur = json!({"Id": "b", "Image": "i", "Config": {"Cmd": ["y"]}, "HostConfig": {"Memory": 16}});
        let d = differences(&cur, &snap, "default", "default");
        assert!(d.contains(&"HostConfig.Memory differs (16; snapshot 64)".to_string()), "{d:?}");
        assert!(d.contains(&"Config.Cmd differs".to_string()), "{d:?}");
    }
}
