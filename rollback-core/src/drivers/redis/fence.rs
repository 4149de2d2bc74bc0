//! The write fence: every ACL user of the server but one loses its write commands
//! (`ACL SETUSER <user> -@write`), and the rollback works as a user of its own,
//! `rollback-fence`, made for the window with a random password that only this
//! process knows. ACL changes apply to connections already open, at their next
//! command, and a command a script or a `MULTI` runs is checked too, so a client
//! that writes is refused (`NOPERM`) and its write never acknowledged, while reads
//! go on. Lifting the fence gives each user back the command rules it had.
//!
//! `CLIENT PAUSE WRITE` would look like the natural fence, but it pauses the client
//! that issued it too: the rollback could not restore under it.
//!
//! ACL changes do not reach a client already blocked in `BLPOP`, `BLMOVE`,
//! `BZPOPMIN`, `XREADGROUP`…: Redis would serve it the moment the restore re-creates
//! its key, handing it an element inside the window. Once the users are fenced,
//! such clients of the component's db are unblocked with an error (`CLIENT UNBLOCK
//! … ERROR`); their retry is refused like any write until the fence is lifted.
//!
//! ACL rules are server-wide: the fence covers every db of the server for its
//! window, which the record gives. Another rollback's fence shows as the user
//! `rollback-fence`; a rollback waits for it to go, so two never read each other's
//! fence as a user's own rules.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Value;
use serde::{Deserialize, Serialize};

use super::RedisDriver;
use crate::driver::{Context, FencePlan};
use crate::error::{Error, ErrorKind, Result};

/// The user the rollback works as while the fence is up.
pub(super) const FENCE_USER: &str = "rollback-fence";
/// How long a rollback waits for another's fence on the same server.
const TURN_WAIT: Duration = Duration::from_secs(300);

/// What lifting the fence puts back: each user's command rules and selectors (never
/// its passwords, which the fence does not touch).
/// Empty for a component that shares the fence another component of this process
/// raised on the same server: the last holder lifts what every holder took.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Undo {
    users: Vec<UserRules>,
}

/// The fences this process holds, by server: the components of one stack that share
/// a server share its fence (one `rollback-fence` user), instead of waiting for each
/// other's.
static HELD: std::sync::Mutex<Vec<Held>> = std::sync::Mutex::new(Vec::new());

struct Held {
    server: String,
    password: String,
    users: Vec<UserRules>,
    /// The components holding it (store and name: a component raised again by
    /// `resume`, or by a rollback that replaced an abandoned one, counts once).
    holders: std::collections::BTreeSet<String>,
}

fn held() -> std::sync::MutexGuard<'static, Vec<Held>> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

fn holder(ctx: &Context) -> String {
    format!("{}\0{}", ctx.store.root().display(), ctx.component)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserRules {
    name: String,
    /// The root selector's command rules as `ACL GETUSER` describes them.
    commands: String,
    /// Further selectors (Redis 7), each as one `(...)` rule.
    #[serde(default)]
    selectors: Vec<String>,
}

fn undo_of(v: &serde_json::Value) -> Result<Undo> {
    serde_json::from_value(v.clone())
        .map_err(|e| Error::new(ErrorKind::Corrupt, "the journal's redis fence is unreadable").with_source(e))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// `ACL GETUSER`'s reply (a flat name/value array in RESP2, a map in RESP3) as pairs.
fn fields(v: Value) -> Vec<(String, Value)> {
    match v {
        Value::Array(items) => {
            let mut out = Vec::new();
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let Some(k) = text(&k) {
                    out.push((k, v));
                }
            }
            out
        }
        Value::Map(pairs) => pairs.into_iter().filter_map(|(k, v)| text(&k).map(|k| (k, v))).collect(),
        _ => Vec::new(),
    }
}

/// Keys and channels are a string in Redis 7 and a list of patterns in 6.
fn joined(v: &Value) -> String {
    match v {
        Value::Array(items) => items.iter().filter_map(text).collect::<Vec<_>>().join(" "),
        other => text(other).unwrap_or_default(),
    }
}

fn rules_of(name: &str, reply: Value) -> UserRules {
    let mut r = UserRules { name: name.to_string(), commands: String::new(), selectors: Vec::new() };
    for (k, v) in fields(reply) {
        match k.as_str() {
            "commands" => r.commands = text(&v).unwrap_or_default(),
            "selectors" => {
                if let Value::Array(sels) = v {
                    for s in sels {
                        let f: std::collections::HashMap<String, Value> = fields(s).into_iter().collect();
                        let part = |k: &str| f.get(k).map(joined).unwrap_or_default();
                        let rule = [part("keys"), part("channels"), part("commands")]
                            .into_iter()
                            .filter(|p| !p.is_empty())
                            .collect::<Vec<_>>()
                            .join(" ");
                        r.selectors.push(format!("({rule})"));
                    }
                }
            }
            _ => {}
        }
    }
    r
}

impl RedisDriver {
    async fn acl(&self, con: &mut MultiplexedConnection, args: &[&str], what: &str) -> Result<Value> {
        let mut c = redis::cmd("ACL");
        for a in args {
            c.arg(*a);
        }
        c.query_async(con).await.map_err(|e| self.err(what, e))
    }

    pub(super) async fn plan_write_fence(&self) -> Result<FencePlan> {
        if !self.fence {
            return Ok(FencePlan::Unavailable { reason: "`fence = false` is set".into() });
        }
        if held().iter().any(|h| h.server == self.server()) {
            let undo = serde_json::to_value(Undo::default())
                .map_err(|e| Error::unexpected("cannot encode the fence").with_source(e))?;
            return Ok(FencePlan::Ready { undo });
        }
        let mut con = self.connect_as_configured().await?;
        let version = self.server_version(&mut con).await?;
        if super::version_major(&version) < 6 {
            return Ok(FencePlan::Unavailable { reason: format!("Redis {version} has no ACL users (6.0 or later)") });
        }
        let users: Vec<String> = match redis::cmd("ACL").arg("USERS").query_async(&mut con).await {
            Ok(u) => u,
            Err(e) if e.code() == Some("NOPERM") => {
                return Ok(FencePlan::Unavailable {
                    reason: "the url's user may not run ACL (it needs +acl), so it cannot fence other users".into(),
                })
            }
            Err(e) => return Err(self.err("cannot list the ACL users", e)),
        };
        // Whether the user may list and unblock clients, changing nothing: client 0
        // never exists (ids start at 1).
        for probe in [&["LIST", "TYPE", "pubsub"][..], &["UNBLOCK", "0"][..]] {
            match redis::cmd("CLIENT").arg(probe).query_async::<Value>(&mut con).await {
                Ok(_) => {}
                Err(e) if e.code().is_some() => {
                    return Ok(FencePlan::Unavailable {
                        reason: format!(
                            "the url's user cannot run CLIENT {} ({}; it needs +client), so clients blocked in BLPOP \
                             and the like could still pop inside the fence",
                            probe[0],
                            e.code().unwrap_or("refused")
                        ),
                    })
                }
                Err(e) => return Err(self.err("cannot list the clients", e)),
            }
        }
        // Read the rules only once this rollback has the turn: another's fence would
        // read as the users' own rules.
        let t0 = Instant::now();
        while self.user_exists(&mut con, FENCE_USER).await? {
            if t0.elapsed() > TURN_WAIT {
                return Err(Error::new(
                    ErrorKind::Locked,
                    format!(
                        "redis {}: the ACL user `{FENCE_USER}` has existed for {} s: another rollback's write fence \
                         is up (or a killed one left it: `rollback resume` or `rollback abandon` it)",
                        self.target,
                        TURN_WAIT.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut undo = Undo::default();
        for u in users.iter().filter(|u| u.as_str() != FENCE_USER) {
            let reply = self.acl(&mut con, &["GETUSER", u], "cannot read an ACL user").await?;
            if !matches!(reply, Value::Nil) {
                undo.users.push(rules_of(u, reply));
            }
        }
        let undo =
            serde_json::to_value(undo).map_err(|e| Error::unexpected("cannot encode the fence").with_source(e))?;
        Ok(FencePlan::Ready { undo })
    }

    /// The server, as fences are shared: host and port, whatever the db.
    fn server(&self) -> String {
        self.client.get_connection_info().addr.to_string()
    }

    pub(super) async fn raise_write_fence(&self, ctx: &Context, undo: &serde_json::Value) -> Result<String> {
        let u = undo_of(undo)?;
        let mut con = self.connect_as_configured().await?;
        let shared =
            held().iter().find(|h| h.server == self.server() && !h.password.is_empty()).map(|h| h.password.clone());
        let password = match shared {
            Some(pw) => pw,
            None => {
                // A new password each time: raised again by `resume`, the fence is
                // this process's, and a password a killed process knew is worth nothing.
                let password = hex::encode(rand::random::<[u8; 24]>());
                self.redactor.add(&password);
                let pw = format!(">{password}");
                let mut create = vec!["SETUSER", FENCE_USER, "reset", "on", pw.as_str(), "~*", "&*", "+@all"];
                if self.acl(&mut con, &create, "cannot create the fence's user").await.is_err() {
                    // Redis 6.0 has no channel rules (`&*`) and lets every user publish.
                    create.retain(|a| *a != "&*");
                    self.acl(&mut con, &create, "cannot create the fence's user").await?;
                }
                let mut all = held();
                // What a failed lift left to give back is given back with this fence.
                let mut users = Vec::new();
                all.retain(|h| {
                    let stale = h.server == self.server() && h.password.is_empty();
                    if stale {
                        users.extend(h.users.iter().cloned());
                    }
                    !stale
                });
                all.push(Held {
                    server: self.server(),
                    password: password.clone(),
                    users,
                    holders: Default::default(),
                });
                password
            }
        };
        // Users first, then the holder count: a fence half raised is lifted whole.
        for user in &u.users {
            let mut args = vec!["SETUSER", user.name.as_str(), "-@write"];
            if !user.selectors.is_empty() {
                args.push("clearselectors");
            }
            match self.acl(&mut con, &args, "cannot take write commands from an ACL user").await {
                Ok(_) => {}
                // Deleted since the plan: nothing of it can write.
                Err(_) if !self.user_exists(&mut con, &user.name).await? => {}
                Err(e) => return Err(e),
            }
        }
        // Only now, with every user fenced, can no client block anew in a write.
        let unblocked = self.unblock_writers(&mut con).await?;
        let fenced = {
            let mut all = held();
            let h = all.iter_mut().find(|h| h.server == self.server() && h.password == password);
            let Some(h) = h else {
                return Err(Error::unexpected("the redis fence was lifted while it was being raised"));
            };
            for user in &u.users {
                if !h.users.iter().any(|x| x.name == user.name) {
                    h.users.push(user.clone());
                }
            }
            h.holders.insert(holder(ctx));
            h.users.iter().map(|x| x.name.clone()).collect::<Vec<_>>()
        };
        *self.fence_auth.lock().await = Some(password);
        let mut how = format!(
            "write commands taken from {} ACL user(s) ({}): their writes are refused (NOPERM), in every db of the \
             server; the rollback writes as `{FENCE_USER}`",
            fenced.len(),
            fenced.join(", ")
        );
        if unblocked > 0 {
            how.push_str(&format!(
                "; {unblocked} client(s) blocked in a write in db {} unblocked with an error",
                self.db
            ));
        }
        Ok(how)
    }

    /// Unblocks (with an error) the clients of this db blocked in a command that
    /// writes: ACL changes do not wake them, and the restore re-creating their key
    /// would serve them inside the window. Clients blocked in a read (`XREAD`,
    /// `WAIT`) are left alone: a read goes on under the fence, and unblocked it would
    /// only block again. Returns how many were unblocked.
    async fn unblock_writers(&self, con: &mut MultiplexedConnection) -> Result<u64> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(con)
            .await
            .map_err(|e| self.err("cannot list the clients", e))?;
        let blocked: Vec<(u64, String)> = list
            .lines()
            .filter_map(|line| {
                let field = |k: &str| line.split(' ').find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='));
                let (id, flags, db, cmd) = (field("id")?, field("flags")?, field("db")?, field("cmd")?);
                let ours = field("user") == Some(FENCE_USER);
                (flags.contains('b') && db == self.db.to_string() && !ours)
                    .then(|| Some((id.parse().ok()?, cmd.to_string())))
                    .flatten()
            })
            .collect();
        if blocked.is_empty() {
            return Ok(0);
        }
        let mut names: Vec<&str> = blocked.iter().map(|(_, c)| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let reads = self.read_only_commands(con, &names).await;
        let mut n = 0;
        for (id, cmd) in &blocked {
            if reads.contains(cmd) {
                continue;
            }
            let done: u64 = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(*id)
                .arg("ERROR")
                .query_async(con)
                .await
                .map_err(|e| self.err("cannot unblock a client blocked in a write", e))?;
            n += done;
        }
        if n > 0 {
            tracing::info!(server = %self.target, unblocked = n, "clients blocked in a write unblocked by the fence");
        }
        Ok(n)
    }

    /// Which of `names` (as `CLIENT LIST` gives them) the server says do not write.
    /// A command it does not describe counts as a write, and is unblocked.
    async fn read_only_commands(&self, con: &mut MultiplexedConnection, names: &[&str]) -> Vec<String> {
        let mut c = redis::cmd("COMMAND");
        c.arg("INFO");
        for name in names {
            // A subcommand shows as `container|sub`; its container describes it well
            // enough here (no blocking subcommand exists).
            c.arg(name.split('|').next().unwrap_or(name));
        }
        let Ok(Value::Array(infos)) = c.query_async::<Value>(con).await else {
            return Vec::new();
        };
        names
            .iter()
            .zip(infos)
            .filter_map(|(name, info)| {
                let Value::Array(info) = info else { return None };
                let flags = match info.get(2) {
                    Some(Value::Array(f)) | Some(Value::Set(f)) => f.iter().filter_map(text).collect::<Vec<_>>(),
                    _ => return None,
                };
                (!flags.iter().any(|f| f == "write")).then(|| name.to_string())
            })
            .collect()
    }

    async fn user_exists(&self, con: &mut MultiplexedConnection, name: &str) -> Result<bool> {
        let v = self.acl(con, &["GETUSER", name], "cannot read an ACL user").await?;
        Ok(!matches!(v, Value::Nil))
    }

    pub(super) async fn lift_write_fence(&self, ctx: &Context, undo: &serde_json::Value) -> Result<()> {
        let mut users = undo_of(undo)?.users;
        *self.fence_auth.lock().await = None;
        {
            let mut all = held();
            if let Some(i) = all.iter().position(|h| h.server == self.server()) {
                all[i].holders.remove(&holder(ctx));
                if !all[i].holders.is_empty() {
                    // Another component of this process still restores under it.
                    return Ok(());
                }
                // The last holder lifts what every holder raised.
                for x in all.remove(i).users {
                    if !users.iter().any(|y| y.name == x.name) {
                        users.push(x);
                    }
                }
            }
        }
        let r = self.give_rules_back(&users).await;
        if r.is_err() {
            // Kept for the next try, which may come with a journal entry that names none.
            held().push(Held { server: self.server(), password: String::new(), users, holders: Default::default() });
        }
        r
    }

    async fn give_rules_back(&self, users: &[UserRules]) -> Result<()> {
        let mut con = self.connect_as_configured().await?;
        for user in users {
            // `-@all` first: the description is complete from there, so the user gets
            // exactly the rules it had, whatever the fence added.
            let mut args = vec!["SETUSER", user.name.as_str(), "-@all"];
            args.extend(user.commands.split_whitespace());
            if !user.selectors.is_empty() {
                args.push("clearselectors");
                args.extend(user.selectors.iter().map(String::as_str));
            }
            if let Err(e) = self.acl(&mut con, &args, "cannot give an ACL user its rules back").await {
                if self.user_exists(&mut con, &user.name).await? {
                    return Err(e);
                }
            }
        }
        self.acl(&mut con, &["DELUSER", FENCE_USER], "cannot delete the fence's user").await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn rules_are_read_from_redis_7_and_6_replies() {
        let v7 = Value::Array(vec![
            bulk("flags"),
            Value::Array(vec![bulk("on")]),
            bulk("passwords"),
            Value::Array(vec![bulk("2d9c…")]),
            bulk("commands"),
            bulk("+@all -debug"),
            bulk("keys"),
            bulk("~*"),
            bulk("channels"),
            bulk("&*"),
            bulk("selectors"),
            Value::Array(vec![Value::Array(vec![
                bulk("commands"),
                bulk("-@all +set"),
                bulk("keys"),
                bulk("~app:*"),
                bulk("channels"),
                bulk(""),
            ])]),
        ]);
        let r = rules_of("app", v7);
        assert_eq!(r.commands, "+@all -debug");
        assert_eq!(r.selectors, vec!["(~app:* -@all +set)".to_string()]);
        let json = serde_json::to_string(&Undo { users: vec![r] }).unwrap();
        assert!(!json.contains("2d9c"), "a password hash reached the journal: {json}");

        let v6 = Value::Array(vec![
            bulk("flags"),
            Value::Array(vec![bulk("on"), bulk("allkeys")]),
            bulk("passwords"),
            Value::Array(vec![]),
            bulk("commands"),
            bulk("+@all"),
            bulk("keys"),
            Value::Array(vec![bulk("*")]),
        ]);
        let r = rules_of("default", v6);
        assert_eq!((r.commands.as_str(), r.selectors.len()), ("+@all", 0));
    }
}
