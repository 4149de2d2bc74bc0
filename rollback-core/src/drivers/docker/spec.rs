//! From a captured inspect to a create request.
//!
//! Works on the engine's JSON (as bollard serializes it) rather than typed structs,
//! so that fields bollard and the engine know but this code does not are carried over
//! untouched.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::error::Result;
use crate::secret::Redactor;

pub(crate) fn env_pairs(v: &Value) -> BTreeMap<String, String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str())
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (e.to_string(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A redactor knowing every env value of the container: env values are often secrets
/// and the engine echoes them in errors. Kept apart from the stack's redactor, which is
/// shared: a value like `production` must not become `***` everywhere else.
pub(crate) fn env_redactor(inspect: &Value) -> Redactor {
    let own = Redactor::default();
    for (_, v) in env_pairs(&inspect["Config"]["Env"]) {
        own.add(&v);
    }
    own
}

/// Manifest summary of a container: names, never values.
pub(crate) fn summary(i: &Value, redactor: &Redactor) -> Value {
    let cfg = &i["Config"];
    let env_keys: Vec<String> = env_pairs(&cfg["Env"]).into_keys().collect();
    let scrub = env_redactor(i);
    let redact_list = |v: &Value| -> Value {
        match v.as_array() {
            Some(a) => Value::Array(
                a.iter().map(|s| Value::String(redactor.redact(&scrub.redact(s.as_str().unwrap_or(""))))).collect(),
            ),
            None => Value::Null,
        }
    };
    let mounts: Vec<String> = i["Mounts"].as_array().map(|m| m.iter().map(mount_line).collect()).unwrap_or_default();
    let networks: Vec<String> =
        i["NetworkSettings"]["Networks"].as_object().map(|n| n.keys().cloned().collect()).unwrap_or_default();
    json!({
        "env_keys": env_keys,
        "cmd": redact_list(&cfg["Cmd"]),
        "entrypoint": redact_list(&cfg["Entrypoint"]),
        "ports": i["HostConfig"]["PortBindings"],
        "mounts": mounts,
        "networks": networks,
        "restart_policy": i["HostConfig"]["RestartPolicy"]["Name"],
        "healthcheck": !cfg["Healthcheck"].is_null(),
    })
}

pub(crate) fn mount_line(m: &Value) -> String {
    let src = m["Name"].as_str().filter(|s| !s.is_empty()).or(m["Source"].as_str()).unwrap_or("");
    format!(
        "{}:{}:{}{}",
        m["Type"].as_str().unwrap_or("?"),
        src,
        m["Destination"].as_str().unwrap_or(""),
        if m["RW"].as_bool() == Some(false) { ":ro" } else { "" }
    )
}

/// Anonymous volumes are named by the engine with 64 hex digits.
pub(crate) fn is_anonymous_volume(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Anonymous volumes go back to being anonymous: a container an earlier version of
/// this driver restored mounts the volume it carried over by name (a `Binds` entry
/// `<64 hex>:/path`, or the `Source` of a `Mounts` entry), which `docker rm -v` then
/// leaves behind. The new container gets its own anonymous volume there instead, and
/// the restore copies the data in.
fn unname_anonymous(cfg: &mut Map<String, Value>, host: &mut Map<String, Value>, img: &Value) {
    let mut places = Vec::new();
    if let Some(b) = host.get_mut("Binds").and_then(|b| b.as_array_mut()) {
        b.retain(|x| {
            let mut parts = x.as_str().unwrap_or("").split(':');
            match (parts.next(), parts.next()) {
                (Some(src), Some(dst)) if is_anonymous_volume(src) => {
                    places.push(dst.to_string());
                    false
                }
                _ => true,
            }
        });
    }
    for dst in places {
        if img["Volumes"].get(&dst).is_none() {
            let vols = cfg.entry("Volumes").or_insert_with(|| json!({}));
            if !vols.is_object() {
                *vols = json!({});
            }
            vols[&dst] = json!({});
        }
    }
    for m in host.get_mut("Mounts").and_then(|m| m.as_array_mut()).into_iter().flatten() {
        if m["Type"] == "volume" && m["Source"].as_str().is_some_and(is_anonymous_volume) {
            if let Some(o) = m.as_object_mut() {
                o.remove("Source");
            }
        }
    }
}

fn sorted_strings(v: &Value) -> BTreeSet<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// The create request recreating `snap` on `image_id` (an id, or a reference that
/// names that image), and the networks to connect
/// after create (engines before API 1.44 take one network at create).
///
/// `network_mode` replaces a captured `container:<id>`: the id is of a container that a
/// restore may have replaced, so it is given by name. Anonymous volumes are created
/// anew, anonymous (see [`unname_anonymous`]).
pub(crate) fn create_body(
    snap: &Value,
    image: &Value,
    image_id: &str,
    network_mode: &str,
) -> Result<(Value, Vec<(String, Value)>)> {
    let mut cfg = snap["Config"].as_object().cloned().unwrap_or_default();
    let img = &image["Config"];
    let id = snap["Id"].as_str().unwrap_or("");
    let short = super::short_id(id).to_string();

    // Inspect merges the image's defaults into Config; recreating from it would pin the
    // old image's defaults (Watchtower's GetCreateConfig does the same subtraction).
    if let Some(env) = cfg.get("Env").and_then(|e| e.as_array()).cloned() {
        let img_env = sorted_strings(&img["Env"]);
        let kept: Vec<Value> = env.into_iter().filter(|e| !e.as_str().is_some_and(|s| img_env.contains(s))).collect();
        cfg.insert("Env".into(), Value::Array(kept));
    }
    if let Some(Value::Object(labels)) = cfg.get("Labels").cloned() {
        let kept: Map<String, Value> = labels.into_iter().filter(|(k, v)| img["Labels"].get(k) != Some(v)).collect();
        cfg.insert("Labels".into(), Value::Object(kept));
    }
    if let Some(Value::Object(vols)) = cfg.get("Volumes").cloned() {
        let kept: Map<String, Value> = vols.into_iter().filter(|(k, _)| img["Volumes"].get(k).is_none()).collect();
        cfg.insert("Volumes".into(), if kept.is_empty() { Value::Null } else { Value::Object(kept) });
    }
    let mut exposed: Map<String, Value> = cfg
        .get("ExposedPorts")
        .and_then(|e| e.as_object())
        .map(|e| {
            e.iter()
                .filter(|(k, _)| img["ExposedPorts"].get(*k).is_none())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    // Published ports must be exposed, or the engine ignores their bindings.
    if let Some(pb) = snap["HostConfig"]["PortBindings"].as_object() {
        for k in pb.keys() {
            exposed.insert(k.clone(), json!({}));
        }
    }
    cfg.insert("ExposedPorts".into(), if exposed.is_empty() { Value::Null } else { Value::Object(exposed) });
    for key in ["WorkingDir", "User"] {
        if cfg.get(key) == Some(&img[key]) {
            cfg.insert(key.into(), Value::String(String::new()));
        }
    }
    if cfg.get("Healthcheck") == Some(&img["Healthcheck"]) {
        cfg.remove("Healthcheck");
    }
    let same_entry = cfg.get("Entrypoint").unwrap_or(&Value::Null) == &img["Entrypoint"];
    let same_cmd = cfg.get("Cmd").unwrap_or(&Value::Null) == &img["Cmd"];
    if same_entry {
        cfg.remove("Entrypoint");
        if same_cmd {
            cfg.remove("Cmd");
        }
    }
    let network_mode = network_mode.to_string();
    if cfg.get("Hostname").and_then(|h| h.as_str()) == Some(short.as_str()) || network_mode.starts_with("container:") {
        cfg.remove("Hostname");
        cfg.remove("Domainname");
    }
    cfg.insert("Image".into(), Value::String(image_id.to_string()));

    let mut host = snap["HostConfig"].clone();
    if let Some(h) = host.as_object_mut() {
        // Links are given per network endpoint below.
        h.remove("Links");
        h.insert("NetworkMode".into(), Value::String(network_mode.clone()));
        unname_anonymous(&mut cfg, h, img);
    }

    // Networks: drop endpoint details the engine assigns, and aliases that were the old
    // container's id (they would pile up across recreations).
    let mut nets: Vec<(String, Value)> = Vec::new();
    if let Some(n) = snap["NetworkSettings"]["Networks"].as_object() {
        for (name, ep) in n {
            let aliases: Vec<Value> = ep["Aliases"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|x| {
                            let s = x.as_str().unwrap_or("");
                            s != short && s != id
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let mut e = Map::new();
            if !aliases.is_empty() {
                e.insert("Aliases".into(), Value::Array(aliases));
            }
            for k in ["IPAMConfig", "Links", "DriverOpts"] {
                if !ep[k].is_null() {
                    e.insert(k.into(), ep[k].clone());
                }
            }
            nets.push((name.clone(), Value::Object(e)));
        }
    }
    let first = nets.iter().position(|(n, _)| *n == network_mode).unwrap_or(0);
    let mut body = Value::Object(cfg);
    body["HostConfig"] = host;
    let extra = if nets.is_empty()
        || network_mode.starts_with("container:")
        || network_mode == "host"
        || network_mode == "none"
    {
        Vec::new()
    } else {
        let (fname, fep) = nets.remove(first);
        body["NetworkingConfig"] = json!({ "EndpointsConfig": { fname: fep } });
        nets
    };
    Ok((body, extra))
}
