//! The `docker` driver against a real dockerd on the local socket (`scripts/setup-docker.sh`
//! installs and starts it, and builds the `rollback-test/web:*` images from busybox-static).
//! Each test makes its own containers, networks and volumes (`rbt-<random>`) and removes
//! them; a missing engine or image fails the tests.
#![cfg(feature = "driver-docker")]

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rollback_core::{
    Context, ErrorKind, Part, Registry, RollbackOptions, Scope, SnapshotOptions, Stack, StackConfig, Status,
};

const OK: &str = "rollback-test/web:ok";
const V2: &str = "rollback-test/web:v2";
const SICK: &str = "rollback-test/web:sick";

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("the docker CLI must be installed");
    assert!(
        out.status.success(),
        "docker {args:?} failed (is dockerd running? scripts/setup-docker.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker").args(args).output().map(|o| o.status.success()).unwrap_or(false)
}

fn uid() -> String {
    format!("rbt-{:08x}", rand::random::<u32>())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Removes what a test made, even when it fails.
struct Cleanup {
    containers: Vec<String>,
    networks: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            // Also the copies a failed swap could leave aside.
            let out = Command::new("docker").args(["ps", "-aq", "--filter", &format!("name={c}")]).output();
            if let Ok(o) = out {
                for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("docker").args(["rm", "-f", id]).output();
                }
            }
        }
        for n in &self.networks {
            let _ = Command::new("docker").args(["network", "rm", n]).output();
        }
        for v in &self.volumes {
            let _ = Command::new("docker").args(["volume", "rm", "-f", v]).output();
        }
        let out = Command::new("docker").args(["images", "--format", "{{.Repository}}:{{.Tag}}"]).output();
        if let Ok(o) = out {
            for t in String::from_utf8_lossy(&o.stdout).lines() {
                if self.containers.iter().any(|c| t.starts_with(&format!("rollback/{c}:"))) {
                    let _ = Command::new("docker").args(["rmi", t]).output();
                }
            }
        }
    }
}

fn stack(dir: &Path, body: &str) -> Stack {
    let text = format!("[store]\npath = \"{}\"\n{body}", dir.join("store").display());
    let cfg = StackConfig::from_toml_str(&text, None, dir, &|_| None).unwrap();
    Stack::new(cfg, &Registry::with_default_drivers()).unwrap()
}

fn component(name: &str, container: &str) -> String {
    // The test images ignore SIGTERM (busybox httpd as PID 1): a short grace keeps tests fast.
    format!(
        "[[component]]\nname = \"{name}\"\ndriver = \"docker\"\ncontainer = \"{container}\"\nstop_grace = \"1s\"\nhealth_timeout = \"30s\"\n"
    )
}

fn opts() -> RollbackOptions {
    RollbackOptions { scope: Scope::Complete, trigger: Some("test".into()), ..Default::default() }
}

/// One HTTP GET; the body, or None when nothing answers.
fn get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    if !buf.starts_with("HTTP/1.") || !buf.contains(" 200 ") {
        return None;
    }
    buf.split("\r\n\r\n").nth(1).map(|b| b.trim().to_string())
}

fn wait_get(port: u16) -> Option<String> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        if let Some(b) = get(port) {
            return Some(b);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn inspect(name: &str) -> serde_json::Value {
    let s = docker(&["inspect", name]);
    serde_json::from_str::<serde_json::Value>(&s).unwrap()[0].clone()
}

fn wait_healthy(name: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if docker(&["inspect", "-f", "{{.State.Health.Status}}", name]) == "healthy" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{name} did not become healthy");
}

#[tokio::test]
async fn env_ports_mounts_networks_survive_a_round_trip() {
    let id = uid();
    let (net1, net2, vol) = (format!("{id}-front"), format!("{id}-back"), format!("{id}-data"));
    let _c = Cleanup {
        containers: vec![id.clone()],
        networks: vec![net1.clone(), net2.clone()],
        volumes: vec![vol.clone()],
    };
    let dir = tempfile::tempdir().unwrap();
    let bind = dir.path().join("conf");
    std::fs::create_dir_all(&bind).unwrap();
    std::fs::write(bind.join("app.conf"), "x=1\n").unwrap();
    let port = free_port();
    docker(&["network", "create", &net1]);
    docker(&["network", "create", &net2]);
    docker(&["volume", "create", &vol]);
    let secret = format!("s3cret-{}", rand::random::<u32>());
    docker(&[
        "run",
        "-d",
        "--name",
        &id,
        "--network",
        &net1,
        "--network-alias",
        "web-front",
        "-e",
        &format!("API_TOKEN={secret}"),
        "-e",
        "APP_MODE=live",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "-v",
        &format!("{vol}:/data"),
        "-v",
        &format!("{}:/conf:ro", bind.display()),
        "--label",
        "team=trading",
        "--restart",
        "unless-stopped",
        OK,
    ]);
    docker(&["network", "connect", "--alias", "web-back", &net2, &id]);
    wait_healthy(&id);
    assert_eq!(wait_get(port).as_deref(), Some("ok"));
    let old_short = inspect(&id)["Id"].as_str().unwrap()[..12].to_string();

    let s = stack(dir.path(), &component("web", &id));
    let snap = s.snapshot(SnapshotOptions { label: Some("before".into()), ..Default::default() }).await.unwrap();
    let manifest = std::fs::read_to_string(dir.path().join("store/snapshots").join(format!("{}.json", snap.id)))
        .or_else(|_| serde_json::to_string(&snap))
        .unwrap();
    assert!(!manifest.contains(&secret), "env values must not be in the manifest");
    let st = &snap.parts[0].state["containers"][0];
    assert_eq!(st["env_keys"], serde_json::json!(["API_TOKEN", "APP_MODE", "PATH"]));
    assert!(docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .contains(&format!("rollback/{id}:{}", snap.id.to_lowercase())));
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);

    // The bad deploy: another image, other env, no networks, no mounts, another port.
    docker(&["rm", "-f", &id]);
    docker(&[
        "run",
        "-d",
        "--name",
        &id,
        "-e",
        "APP_MODE=broken",
        "-p",
        &format!("127.0.0.1:{}:8080", free_port()),
        V2,
    ]);
    let v = s.verify(&snap.id, &[]).await.unwrap();
    assert!(!v.ok);
    let text = v.components["web"].differences.join("\n");
    assert!(text.contains("env API_TOKEN is missing") && text.contains("env APP_MODE differs"), "{text}");
    assert!(text.contains("mounts differ") && text.contains("networks differ") && text.contains("image"), "{text}");
    assert!(!text.contains(&secret) && !text.contains("broken"), "values must not be shown: {text}");

    let r = s.rollback(&snap.id, opts()).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    assert_eq!(wait_get(port).as_deref(), Some("ok"));

    let i = inspect(&id);
    let env: Vec<&str> = i["Config"]["Env"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(env.contains(&format!("API_TOKEN={secret}").as_str()) && env.contains(&"APP_MODE=live"), "{env:?}");
    assert_eq!(i["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    assert_eq!(i["Config"]["Labels"]["team"], "trading");
    assert_eq!(i["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"], port.to_string());
    let mounts: Vec<String> = i["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}>{}>{}", m["Name"].as_str().or(m["Source"].as_str()).unwrap(), m["Destination"], m["RW"]))
        .collect();
    assert!(mounts.contains(&format!("{vol}>\"/data\">true")), "{mounts:?}");
    assert!(mounts.contains(&format!("{}>\"/conf\">false", bind.display())), "{mounts:?}");
    let nets = &i["NetworkSettings"]["Networks"];
    let aliases = |n: &str| -> Vec<String> {
        nets[n]["Aliases"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
    };
    assert!(aliases(&net1).contains(&"web-front".to_string()), "{nets}");
    assert!(aliases(&net2).contains(&"web-back".to_string()), "{nets}");
    assert!(
        !aliases(&net1).contains(&old_short) && !aliases(&net2).contains(&old_short),
        "old id alias carried over: {nets}"
    );
    // The image's own defaults were not pinned as if the user had set them.
    assert!(i["Config"]["Healthcheck"].is_object());
    // Nothing left aside.
    assert!(!docker(&["ps", "-a", "--format", "{{.Names}}"]).contains(&format!("{id}-rollback-aside")));

    // A second rollback to the same snapshot changes nothing.
    let before = i["Id"].clone();
    let r = s.rollback(&snap.id, RollbackOptions { no_safety_snapshot: true, ..opts() }).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(inspect(&id)["Id"], before, "an equal container must not be recreated");
}

#[tokio::test]
async fn unhealthy_target_is_compensated_and_the_old_container_serves_again() {
    let id = uid();
    let _c = Cleanup { containers: vec![id.clone()], networks: vec![], volumes: vec![] };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    // The snapshot holds an image whose healthcheck always fails.
    docker(&["run", "-d", "--name", &id, "-p", &publish, SICK]);
    let s = stack(dir.path(), &component("web", &id).replace("health_timeout = \"30s\"", "health_timeout = \"20s\""));
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    docker(&["rm", "-f", &id]);
    docker(&["run", "-d", "--name", &id, "-p", &publish, "-e", "GOOD=1", OK]);
    wait_healthy(&id);
    let good_id = inspect(&id)["Id"].clone();

    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let ev = events.clone();
    let cb: rollback_core::EventCallback = std::sync::Arc::new(move |e: &rollback_core::Event| {
        ev.lock().unwrap().push(format!("{e:?}"));
    });
    let r = s.rollback(&snap.id, RollbackOptions { on_event: Some(cb), ..opts() }).await.unwrap();
    assert_eq!(r.status, Status::Compensated, "{}", r.to_json());
    let err = r.steps.iter().find_map(|s| s.error.clone()).unwrap_or_default();
    assert!(err.contains("unhealthy") && err.contains("put back"), "{}", r.to_json());
    assert!(err.contains("web"), "error names the component: {err}");
    // The old container, the very same one, serves again.
    let i = inspect(&id);
    assert_eq!(i["Id"], good_id);
    assert_eq!(i["State"]["Running"], true);
    assert_eq!(wait_get(port).as_deref(), Some("ok"));
    assert!(!docker(&["ps", "-a", "--format", "{{.Names}}"]).contains(&format!("{id}-rollback-aside")));
    let seen = events.lock().unwrap().join("\n");
    assert!(seen.contains("healthy") || seen.contains("creating container"), "progress events: {seen}");
}

#[tokio::test]
async fn a_container_removed_after_the_snapshot_is_recreated() {
    let id = uid();
    let _c = Cleanup { containers: vec![id.clone()], networks: vec![], volumes: vec![] };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    docker(&["run", "-d", "--name", &id, "-p", &format!("127.0.0.1:{port}:8080"), "-e", "K=v1", V2]);
    wait_healthy(&id);
    let s = stack(dir.path(), &component("web", &id));
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    docker(&["rm", "-f", &id]);
    let v = s.verify(&snap.id, &[]).await.unwrap();
    assert!(v.components["web"].differences.join("\n").contains("does not exist"), "{v:?}");
    // The safety snapshot records the container as absent.
    let r = s.rollback(&snap.id, opts()).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(wait_get(port).as_deref(), Some("v2"));
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);

    // gc's release drops the protecting tag.
    let driver = s.driver("web").unwrap();
    let ctx = Context::new("web", s.store().clone(), dir.path());
    driver.release(&ctx, &snap.parts[0]).await.unwrap();
    assert!(!docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]).contains(&format!("rollback/{id}:")));
}

#[tokio::test]
async fn a_label_selects_every_container_of_a_project() {
    let id = uid();
    let (a, b, extra) = (format!("{id}-a"), format!("{id}-b"), format!("{id}-c"));
    let _c = Cleanup { containers: vec![a.clone(), b.clone(), extra.clone()], networks: vec![], volumes: vec![] };
    let dir = tempfile::tempdir().unwrap();
    let label = format!("rbt.project={id}");
    docker(&["run", "-d", "--name", &a, "--label", &label, OK]);
    docker(&["run", "-d", "--name", &b, "--label", &label, "-e", "ROLE=worker", OK]);
    let body =
        format!("[[component]]\nname = \"proj\"\ndriver = \"docker\"\nlabel = \"{label}\"\nstop_grace = \"0s\"\n");
    let s = stack(dir.path(), &body);
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    assert_eq!(snap.parts[0].state["containers"].as_array().unwrap().len(), 2);
    // The bad deploy: b on another image, and an extra container in the project.
    docker(&["rm", "-f", &b]);
    docker(&["run", "-d", "--name", &b, "--label", &label, V2]);
    docker(&["run", "-d", "--name", &extra, "--label", &label, V2]);
    let text = s.verify(&snap.id, &[]).await.unwrap().components["proj"].differences.join("\n");
    assert!(text.contains(&extra) && text.contains(&b), "{text}");
    let r = s.rollback(&snap.id, opts()).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    assert!(!docker_ok(&["inspect", &extra]), "the container added by the bad deploy was removed");

    // A capture killed before its manifest was written: its image tags are found by
    // the snapshot id alone (the label may select other containers by then).
    let driver = s.driver("proj").unwrap();
    let mut ctx = Context::new("proj", s.store().clone(), dir.path());
    ctx.snapshot_id = format!("{}-unfinished", snap.id);
    driver.capture(&ctx).await.unwrap();
    let tags = || docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let pinned = |t: &str| t.lines().filter(|l| l.ends_with(&format!(":{}", ctx.snapshot_id.to_lowercase()))).count();
    assert_eq!(pinned(&tags()), 2, "{}", tags());
    driver.release_unfinished(&ctx).await.unwrap();
    assert_eq!(pinned(&tags()), 0, "{}", tags());
    let kept = format!("rollback/{a}:");
    assert!(tags().contains(&kept), "the finished snapshot keeps its tag: {}", tags());
}

#[tokio::test]
async fn unknown_container_and_foreign_snapshot_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = uid();
    let s = stack(dir.path(), &component("api", &missing));
    let e = s.snapshot(SnapshotOptions::default()).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("api") && msg.contains(&missing) && msg.contains("does not exist"), "{msg}");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{msg}");

    // A part captured by another driver handed to this one.
    let driver = s.driver("api").unwrap();
    let ctx = Context::new("api", s.store().clone(), dir.path());
    let part = Part {
        component: "api".into(),
        driver: "releases".into(),
        phase: 1,
        state: serde_json::json!({ "target": "v1", "release": "v1" }),
        artifacts: vec![],
        capture_ms: 0,
    };
    let e = driver.restore(&ctx, &part).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("api") && msg.contains("not a docker capture") && msg.contains("releases"), "{msg}");
    let e = driver.verify(&ctx, &part).await.unwrap_err();
    assert!(e.to_string().contains("not a docker capture"), "{e}");

    // A bad `label` is refused when the stack is built.
    let text = format!(
        "[store]\npath = \"{}\"\n[[component]]\nname = \"api\"\ndriver = \"docker\"\nlabel = \"novalue\"\n",
        dir.path().join("store").display()
    );
    let cfg = StackConfig::from_toml_str(&text, None, dir.path(), &|_| None).unwrap();
    let e = Stack::new(cfg, &Registry::with_default_drivers()).unwrap_err();
    assert!(e.to_string().contains("label") && e.to_string().contains("key=value"), "{e}");
}

/// Removes images a test built, even when it fails.
struct ImageCleanup(Vec<String>);

impl Drop for ImageCleanup {
    fn drop(&mut self) {
        for i in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", i]).output();
        }
    }
}

fn events() -> (rollback_core::EventCallback, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let ev = seen.clone();
    let cb: rollback_core::EventCallback = std::sync::Arc::new(move |e: &rollback_core::Event| {
        ev.lock().unwrap().push(format!("{e:?}"));
    });
    (cb, seen)
}

#[tokio::test]
async fn limits_capabilities_healthcheck_hostname_and_ports_are_compared_and_put_back() {
    let id = uid();
    let _c = Cleanup { containers: vec![id.clone()], networks: vec![], volumes: vec![] };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    docker(&[
        "run",
        "-d",
        "--name",
        &id,
        "-p",
        &publish,
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--cap-add",
        "NET_ADMIN",
        "--hostname",
        "web-1",
        "--stop-signal",
        "SIGQUIT",
        "--expose",
        "9000",
        OK,
    ]);
    wait_healthy(&id);
    let s = stack(dir.path(), &component("web", &id));
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);

    // The bad deploy: same image, env and ports, but smaller limits, no capability, another
    // hostname and stop signal, no extra port, and a healthcheck that always fails.
    docker(&["rm", "-f", &id]);
    docker(&[
        "run",
        "-d",
        "--name",
        &id,
        "-p",
        &publish,
        "--memory",
        "16m",
        "--cpus",
        "0.25",
        "--health-cmd",
        "/bin/busybox false",
        "--health-interval",
        "1s",
        OK,
    ]);
    let v = s.verify(&snap.id, &[]).await.unwrap();
    assert!(!v.ok, "verify must see the drift");
    let text = v.components["web"].differences.join("\n");
    for field in ["Memory", "NanoCpus", "CapAdd", "Healthcheck", "StopSignal", "Hostname", "ExposedPorts"] {
        assert!(text.contains(field), "{field} not named: {text}");
    }

    let r = s.rollback(&snap.id, opts()).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let i = inspect(&id);
    assert_eq!(i["HostConfig"]["Memory"], 64 * 1024 * 1024);
    assert_eq!(i["HostConfig"]["NanoCpus"], 500_000_000);
    assert_eq!(i["HostConfig"]["CapAdd"], serde_json::json!(["CAP_NET_ADMIN"]));
    assert_eq!(i["Config"]["Hostname"], "web-1");
    assert_eq!(i["Config"]["StopSignal"], "SIGQUIT");
    assert!(i["Config"]["ExposedPorts"]["9000/tcp"].is_object(), "{}", i["Config"]["ExposedPorts"]);
    assert_eq!(i["Config"]["Healthcheck"]["Test"][1], "/bin/busybox", "the image's healthcheck is back");
    wait_healthy(&id);
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
}

#[tokio::test]
async fn a_stopped_container_is_started_and_anonymous_volumes_are_kept() {
    let id = uid();
    let img = format!("{id}-img:vol");
    let _i = ImageCleanup(vec![img.clone()]);
    let _c = Cleanup { containers: vec![id.clone(), format!("{id}-base")], networks: vec![], volumes: vec![] };
    let dir = tempfile::tempdir().unwrap();
    // An image declaring a VOLUME (as a database image declares its data directory).
    docker(&["create", "--name", &format!("{id}-base"), OK]);
    docker(&["commit", "--change", "VOLUME /data", &format!("{id}-base"), &img]);
    docker(&["run", "-d", "--name", &id, "-v", "/cache", &img]);
    wait_healthy(&id);
    docker(&["exec", &id, "sh", "-c", "echo kept > /data/f && echo kept > /cache/f"]);
    let vols = |c: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = inspect(c)["Mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["Destination"].as_str().unwrap().to_string(), m["Name"].as_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    };
    let before = vols(&id);
    assert_eq!(before.len(), 2, "{before:?}");
    let first_id = inspect(&id)["Id"].clone();
    let s = stack(dir.path(), &component("web", &id));
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();

    // Merely stopped: started again, the very same container.
    docker(&["stop", "-t", "0", &id]);
    let (cb, seen) = events();
    let r = s.rollback(&snap.id, RollbackOptions { on_event: Some(cb), ..opts() }).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let i = inspect(&id);
    assert_eq!(i["Id"], first_id, "a stopped container must be started, not recreated: {:?}", seen.lock().unwrap());
    assert_eq!(i["State"]["Running"], true);
    assert_eq!(docker(&["exec", &id, "cat", "/data/f", "/cache/f"]), "kept\nkept");

    // A change only a recreate puts back: the anonymous volumes go to the new container.
    docker(&["update", "--restart", "always", &id]);
    let r = s.rollback(&snap.id, opts()).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let i = inspect(&id);
    assert_ne!(i["Id"], first_id, "the restart policy needs a recreate");
    assert_eq!(i["HostConfig"]["RestartPolicy"]["Name"], "no");
    let places = |v: &[(String, String)]| v.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>();
    assert_eq!(places(&vols(&id)), places(&before), "volumes at the same places");
    assert_eq!(docker(&["exec", &id, "cat", "/data/f", "/cache/f"]), "kept\nkept");
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    let dangling = docker(&["volume", "ls", "-q", "--filter", "dangling=true"]);
    for (_, v) in &before {
        assert!(!dangling.contains(v.as_str()), "volume {v} left dangling");
    }
    // The test's volumes go with the container.
    let _ = Command::new("docker").args(["rm", "-f", "-v", &id]).output();
}

#[tokio::test]
async fn a_restart_loop_without_healthcheck_is_compensated() {
    let id = uid();
    let _c = Cleanup { containers: vec![id.clone()], networks: vec![], volumes: vec![] };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    // The snapshot holds a container that crashes a moment after each start, and has no
    // Docker healthcheck.
    docker(&[
        "run",
        "-d",
        "--name",
        &id,
        "--no-healthcheck",
        "--restart",
        "always",
        "-p",
        &publish,
        OK,
        "/bin/busybox",
        "sh",
        "-c",
        "sleep 1; exit 3",
    ]);
    let s = stack(dir.path(), &component("web", &id));
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    docker(&["rm", "-f", &id]);
    docker(&["run", "-d", "--name", &id, "--no-healthcheck", "--restart", "always", "-p", &publish, OK]);
    assert_eq!(wait_get(port).as_deref(), Some("ok"));
    let good_id = inspect(&id)["Id"].clone();

    let r = s.rollback(&snap.id, opts()).await.unwrap();
    assert_eq!(r.status, Status::Compensated, "{}", r.to_json());
    let err = r.steps.iter().find_map(|s| s.error.clone()).unwrap_or_default();
    assert!(err.contains("restart") && err.contains("put back"), "{}", r.to_json());
    let i = inspect(&id);
    assert_eq!(i["Id"], good_id, "the working container is back");
    assert_eq!(i["State"]["Running"], true);
    assert_eq!(wait_get(port).as_deref(), Some("ok"));
}

#[tokio::test]
async fn a_dependent_that_is_gone_does_not_block_a_restore() {
    let id = uid();
    let (db, web) = (format!("{id}-db"), format!("{id}-web"));
    let _c = Cleanup { containers: vec![db.clone(), web.clone()], networks: vec![], volumes: vec![] };
    let dir = tempfile::tempdir().unwrap();
    docker(&["run", "-d", "--name", &db, "-e", "V=1", OK]);
    docker(&["run", "-d", "--name", &web, OK]);
    let body = format!("{}{}depends_on = [\"db\"]\n", component("db", &db), component("web", &web));
    let s = stack(dir.path(), &body);
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    docker(&["rm", "-f", &db]);
    docker(&["run", "-d", "--name", &db, "-e", "V=2", OK]);
    // The dependent is gone (removed by hand, or by the bad deploy).
    docker(&["rm", "-f", &web]);

    let (cb, seen) = events();
    let scope = Scope::Component { components: vec!["db".into()] };
    let r = s.rollback(&snap.id, RollbackOptions { scope, on_event: Some(cb), ..opts() }).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let env = inspect(&db)["Config"]["Env"].to_string();
    assert!(env.contains("V=1"), "{env}");
    let seen = seen.lock().unwrap().join("\n");
    assert!(seen.contains(&web) && seen.contains("does not exist"), "a note says the dependent is gone: {seen}");
    assert!(!docker_ok(&["inspect", &web]), "a gone dependent is not recreated by a start");
}

#[tokio::test]
async fn a_sidecar_sharing_the_apps_network_is_restored_after_it() {
    let id = uid();
    // The sidecar's name sorts before the app's: the order must come from the network mode.
    let (side, app) = (format!("{id}-a-side"), format!("{id}-b-app"));
    let _c = Cleanup { containers: vec![side.clone(), app.clone()], networks: vec![], volumes: vec![] };
    let dir = tempfile::tempdir().unwrap();
    let label = format!("rbt.project={id}");
    docker(&["run", "-d", "--name", &app, "--label", &label, OK]);
    let shared = format!("container:{app}");
    let sleep = ["/bin/busybox", "sleep", "3600"];
    let mut run = vec!["run", "-d", "--name", &side, "--label", &label, "--network", &shared, "--no-healthcheck", OK];
    run.extend(sleep);
    docker(&run);
    wait_healthy(&app);
    let body = format!(
        "[[component]]\nname = \"proj\"\ndriver = \"docker\"\nlabel = \"{label}\"\nstop_grace = \"0s\"\nmin_uptime = \"1s\"\n"
    );
    let s = stack(dir.path(), &body);
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);

    // The bad deploy replaces the app; the sidecar still points at the old app's id.
    docker(&["rm", "-f", &app]);
    docker(&["run", "-d", "--name", &app, "--label", &label, V2]);
    let r = s.rollback(&snap.id, opts()).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    let app_id = inspect(&app)["Id"].as_str().unwrap().to_string();
    assert_eq!(inspect(&side)["HostConfig"]["NetworkMode"], format!("container:{app_id}"));
    // The sidecar reaches the restored app on its loopback.
    let t = Instant::now();
    let mut body = String::new();
    while t.elapsed() < Duration::from_secs(15) && body != "ok" {
        let out = Command::new("docker")
            .args(["exec", &side, "/bin/busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/"])
            .output()
            .unwrap();
        body = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if body != "ok" {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(body, "ok");
}

#[tokio::test]
async fn starting_a_project_leaves_a_finished_job_finished() {
    let id = uid();
    let (db, web, job) = (format!("{id}-db"), format!("{id}-web"), format!("{id}-job"));
    let _c = Cleanup { containers: vec![db.clone(), web.clone(), job.clone()], networks: vec![], volumes: vec![] };
    let dir = tempfile::tempdir().unwrap();
    let label = format!("rbt.project={id}");
    docker(&["run", "-d", "--name", &db, "-e", "V=1", OK]);
    docker(&["run", "-d", "--name", &web, "--label", &label, OK]);
    // A one-shot job of the project (a migration): it runs once and exits 0.
    docker(&["run", "-d", "--name", &job, "--label", &label, "--no-healthcheck", OK, "/bin/busybox", "echo", "ran"]);
    let t = Instant::now();
    while docker(&["inspect", "-f", "{{.State.Status}}", &job]) != "exited" {
        assert!(t.elapsed() < Duration::from_secs(15), "the job did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_healthy(&web);
    let body = format!(
        "{}[[component]]\nname = \"proj\"\ndriver = \"docker\"\nlabel = \"{label}\"\nstop_grace = \"0s\"\ndepends_on = [\"db\"]\n",
        component("db", &db)
    );
    let s = stack(dir.path(), &body);
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    docker(&["rm", "-f", &db]);
    docker(&["run", "-d", "--name", &db, "-e", "V=2", OK]);

    // Restoring db stops the project first and starts it after.
    let scope = Scope::Component { components: vec!["db".into()] };
    let r = s.rollback(&snap.id, RollbackOptions { scope, ..opts() }).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(r.steps.iter().any(|st| st.component == "proj" && st.action == "stop"), "{}", r.to_json());
    assert_eq!(docker(&["logs", &job]), "ran", "the job ran again");
    assert_eq!(docker(&["inspect", "-f", "{{.State.Status}}", &job]), "exited");
    assert_eq!(docker(&["inspect", "-f", "{{.State.Running}}", &web]), "true");
}

/// The second engine, `dockerd --tlsverify` on 127.0.0.1:2376 (scripts/docker-tls.sh,
/// with the certificates of scripts/tls-servers.sh): its address and client cert dir.
fn tls_engine() -> &'static (String, String, String) {
    static ENGINE: std::sync::OnceLock<(String, String, String)> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let tls_dir = std::env::var("ROLLBACK_TLS_DIR").unwrap_or_else(|_| "/tmp/rollback-tls-servers".into());
        let dir = std::env::var("ROLLBACK_DOCKER_TLS_DIR").unwrap_or_else(|_| "/tmp/rollback-docker-tls".into());
        for (script, args) in
            [("tls-servers.sh", vec!["start", &tls_dir]), ("docker-tls.sh", vec!["start", &dir, &tls_dir])]
        {
            let out = Command::new("bash").arg(root.join("scripts").join(script)).args(&args).output().unwrap();
            assert!(out.status.success(), "{script} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        let env = std::fs::read_to_string(Path::new(&dir).join("env")).unwrap();
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {k}=")))
                .map(|v| v.trim_matches('\'').to_string())
                .unwrap()
        };
        (get("DOCKER_TLS_HOST"), get("DOCKER_TLS_CERT_PATH"), format!("{tls_dir}/other-ca.crt"))
    })
}

fn tls_docker(args: &[&str]) -> String {
    let (_, certs, _) = tls_engine();
    let mut full = vec!["--tlsverify", "-H", "tcp://127.0.0.1:2376"];
    let flags = [
        format!("--tlscacert={certs}/ca.pem"),
        format!("--tlscert={certs}/cert.pem"),
        format!("--tlskey={certs}/key.pem"),
    ];
    full.extend(flags.iter().map(String::as_str));
    full.extend_from_slice(args);
    docker(&full)
}

struct TlsCleanup(String);

impl Drop for TlsCleanup {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| tls_docker(&["rm", "-f", &self.0]));
    }
}

/// An engine reached over TLS with a client certificate (`dockerd --tlsverify`):
/// snapshot, rollback and verify work, and `check` says the connection is TLS. With
/// a CA that did not sign the engine's certificate the rollback is refused before
/// anything changes, saying why; the client key never shows.
#[tokio::test]
async fn an_engine_over_tls_with_a_client_certificate() {
    let (host, certs, other_ca) = tls_engine().clone();
    let name = uid();
    let _c = TlsCleanup(name.clone());
    tls_docker(&["run", "-d", "--name", &name, "--network", "none", "-e", "V=1", OK]);
    let dir = tempfile::tempdir().unwrap();
    let keys = format!("host = \"{host}\"\ntls_verify = true\ncert_path = \"{certs}\"\nmin_uptime = \"1s\"\n");
    let s = stack(dir.path(), &format!("{}{keys}", component("web", &name)));
    let check = s.check().await.unwrap();
    let line = serde_json::to_string(&check).unwrap();
    assert!(line.contains("TLS: the engine verified against"), "{line}");
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    tls_docker(&["rm", "-f", &name]);
    tls_docker(&["run", "-d", "--name", &name, "--network", "none", "-e", "V=2", V2]);

    let rec = s.rollback(&snap.id, opts()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{}", rec.to_json());
    let env = tls_docker(&["inspect", "-f", "{{range .Config.Env}}{{.}} {{end}}", &name]);
    assert!(env.contains("V=1") && !env.contains("V=2"), "{env}");
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);

    // The wrong CA: refused, nothing changed.
    tls_docker(&["rm", "-f", &name]);
    tls_docker(&["run", "-d", "--name", &name, "--network", "none", "-e", "V=3", V2]);
    let wrong = dir.path().join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    std::fs::copy(&other_ca, wrong.join("ca.pem")).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(Path::new(&certs).join(f), wrong.join(f)).unwrap();
    }
    let keys = format!("host = \"{host}\"\ntls_verify = true\ncert_path = \"wrong\"\nmin_uptime = \"1s\"\n");
    let bad = stack(dir.path(), &format!("{}{keys}", component("web", &name)));
    let e = bad.rollback(&snap.id, opts()).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("certificate"), "{msg}");
    let key = std::fs::read_to_string(Path::new(&certs).join("key.pem")).unwrap();
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!msg.contains(&body[..40]), "{msg}");
    let env = tls_docker(&["inspect", "-f", "{{range .Config.Env}}{{.}} {{end}}", &name]);
    assert!(env.contains("V=3"), "nothing changed: {env}");
}

/// This machine's engine behind an sshd of the test's own (scripts/ssh-server.sh on
/// 127.0.0.1:2022): the directory holding its `ssh_config`.
fn ssh_server() -> &'static String {
    static DIR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let dir = std::env::var("ROLLBACK_SSH_DIR").unwrap_or_else(|_| "/tmp/rollback-ssh-server".into());
        let out = Command::new("bash").arg(root.join("scripts/ssh-server.sh")).args(["start", &dir]).output().unwrap();
        assert!(out.status.success(), "ssh-server.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

/// ssh processes forwarding a socket of this test process (`rollback-ssh-<pid>-…`).
fn our_tunnels() -> usize {
    let out = Command::new("pgrep").args(["-f", &format!("rollback-ssh-{}-", std::process::id())]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// An engine reached over ssh (`host = "ssh://…"`, the keys and known host in the
/// `ssh_config` it names): snapshot, rollback and verify work through one tunnel,
/// `check` says the connection is ssh, and no ssh is left once the stack is gone. A
/// host ssh cannot reach is an error that says why, and changes nothing.
#[tokio::test]
async fn an_engine_over_ssh() {
    let dir_ssh = ssh_server().clone();
    let name = uid();
    let _c = Cleanup { containers: vec![name.clone()], networks: vec![], volumes: vec![] };
    docker(&["run", "-d", "--name", &name, "-e", "V=1", OK]);
    let dir = tempfile::tempdir().unwrap();
    let keys =
        format!("host = \"ssh://rollback-ssh-test\"\nssh_config = \"{dir_ssh}/ssh_config\"\nmin_uptime = \"1s\"\n");
    let s = stack(dir.path(), &format!("{}{keys}", component("web", &name)));
    let line = serde_json::to_string(&s.check().await.unwrap()).unwrap();
    assert!(line.contains("ssh to rollback-ssh-test"), "{line}");
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    docker(&["rm", "-f", &name]);
    docker(&["run", "-d", "--name", &name, "-e", "V=2", V2]);
    let rec = s.rollback(&snap.id, opts()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{}", rec.to_json());
    let env = docker(&["inspect", "-f", "{{range .Config.Env}}{{.}} {{end}}", &name]);
    assert!(env.contains("V=1") && !env.contains("V=2"), "{env}");
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    assert_eq!(our_tunnels(), 1, "one tunnel, reused");
    drop(s);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(our_tunnels(), 0, "the tunnel ends with the stack");

    // A host ssh cannot reach: refused before anything changes, saying why.
    docker(&["rm", "-f", &name]);
    docker(&["run", "-d", "--name", &name, "-e", "V=3", V2]);
    let keys = format!(
        "host = \"ssh://nobody@rollback-ssh-test\"\nssh_config = \"{dir_ssh}/ssh_config\"\nmin_uptime = \"1s\"\n"
    );
    let bad = stack(dir.path(), &format!("{}{keys}", component("web", &name)));
    let e = bad.rollback(&snap.id, opts()).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("ssh to nobody@rollback-ssh-test") && msg.contains("Permission denied"), "{msg}");
    let env = docker(&["inspect", "-f", "{{range .Config.Env}}{{.}} {{end}}", &name]);
    assert!(env.contains("V=3"), "nothing changed: {env}");
}

/// A deploy whose container crashes a moment after each start, under a restart
/// policy: a watch's `process` probe counts the engine's restarts, rolls back to the
/// container that stayed up, and it serves again.
#[tokio::test]
async fn a_watch_rolls_back_a_container_in_a_restart_loop() {
    let id = uid();
    let _c = Cleanup { containers: vec![id.clone()], networks: vec![], volumes: vec![] };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    docker(&["run", "-d", "--name", &id, "--no-healthcheck", "--restart", "always", "-p", &publish, OK]);
    assert_eq!(wait_get(port).as_deref(), Some("ok"));
    let good_id = inspect(&id)["Id"].clone();
    let s = stack(
        dir.path(),
        &format!(
            "{}\n[watch]\ninterval = \"500ms\"\nwindow = 8\nfailure_limit = 2\n\n\
             [[watch.probe]]\nname = \"loop\"\nprocess = \"web\"\nrestarts = 1\n",
            component("web", &id)
        ),
    );
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    docker(&["rm", "-f", &id]);
    docker(&[
        "run",
        "-d",
        "--name",
        &id,
        "--no-healthcheck",
        "--restart",
        "always",
        "-p",
        &publish,
        OK,
        "/bin/busybox",
        "sh",
        "-c",
        "sleep 1; exit 3",
    ]);
    let r = s
        .watch(rollback_core::WatchOptions {
            snapshot: Some(snap.id.clone()),
            duration: Some(Duration::from_secs(90)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.outcome, rollback_core::WatchOutcome::RolledBack, "{r:?}");
    let rec = r.record.as_ref().unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{}", rec.to_json());
    let w = rec.watch.as_ref().unwrap();
    assert!(w.reason.contains("restarts within the window (more than 1): a crash loop"), "{}", w.reason);
    assert_ne!(inspect(&id)["Id"], good_id, "a container made from the snapshot");
    assert_eq!(inspect(&id)["State"]["Running"], true);
    assert_eq!(wait_get(port).as_deref(), Some("ok"));
}

/// The names of the engine's volumes.
fn volumes() -> Vec<String> {
    docker(&["volume", "ls", "-q"]).lines().map(String::from).collect()
}

/// A recreated container gets anonymous volumes of its own, with the data of the ones it
/// replaces, so `docker rm -v` removes them as it would have removed the old ones; the
/// replaced container goes with its volumes. (Before, the new container mounted the old
/// volumes by name: `docker rm -v` left them, and the old ones stayed behind.)
#[tokio::test]
async fn anonymous_volumes_stay_anonymous_and_the_replaced_container_leaves_none_behind() {
    let id = uid();
    let img = format!("{id}-img:vol");
    let _i = ImageCleanup(vec![img.clone()]);
    let _c = Cleanup { containers: vec![id.clone(), format!("{id}-base")], networks: vec![], volumes: vec![] };
    let dir = tempfile::tempdir().unwrap();
    // A VOLUME of the image (as a database image declares its data directory) and a `-v`.
    docker(&["create", "--name", &format!("{id}-base"), OK]);
    docker(&["commit", "--change", "VOLUME /data", &format!("{id}-base"), &img]);
    docker(&["run", "-d", "--name", &id, "-v", "/cache", &img]);
    wait_healthy(&id);
    docker(&[
        "exec",
        &id,
        "sh",
        "-c",
        "mkdir /data/owned && echo kept > /data/owned/f && chown -R 4321:4321 /data/owned && chmod 0700 /data/owned \
         && echo kept > /cache/f",
    ]);
    let names = |c: &str| -> Vec<String> {
        inspect(c)["Mounts"].as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap().to_string()).collect()
    };
    let old = names(&id);
    assert_eq!(old.len(), 2, "{old:?}");
    let s = stack(dir.path(), &component("web", &id));
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();

    // A change only a recreate puts back.
    docker(&["update", "--restart", "always", &id]);
    let r = s.rollback(&snap.id, opts()).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(inspect(&id)["HostConfig"]["RestartPolicy"]["Name"], "no", "recreated");
    // The data came along, with its owner and mode.
    assert_eq!(docker(&["exec", &id, "cat", "/data/owned/f", "/cache/f"]), "kept\nkept");
    assert_eq!(docker(&["exec", &id, "/bin/busybox", "stat", "-c", "%u:%g %a", "/data/owned"]), "4321:4321 700");
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    // The replaced container's volumes went with it.
    let now = volumes();
    for v in &old {
        assert!(!now.contains(v), "volume {v} of the replaced container was left behind");
    }
    assert!(!docker(&["ps", "-a", "--format", "{{.Names}}"]).contains(&format!("{id}-rollback")));
    // And the new container's are anonymous: `docker rm -v` removes them.
    let new = names(&id);
    assert_eq!(new.len(), 2, "{new:?}");
    for m in inspect(&id)["HostConfig"]["Binds"].as_array().into_iter().flatten() {
        assert!(!new.iter().any(|v| m.as_str().unwrap().starts_with(v.as_str())), "mounted by name: {m}");
    }
    docker(&["rm", "-f", "-v", &id]);
    let now = volumes();
    for v in &new {
        assert!(!now.contains(v), "`docker rm -v` left volume {v} of the restored container behind");
    }
}

/// `stop_grace = "800ms"`: the engine takes whole seconds, and 0.8 s became 0 s, a kill
/// at once. A service that needs 0.3 s after SIGTERM to flush must get to finish.
#[tokio::test]
async fn a_sub_second_stop_grace_lets_the_service_flush() {
    let id = uid();
    let _c = Cleanup { containers: vec![id.clone()], networks: vec![], volumes: vec![] };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // PID 1 sh with a TERM trap: it runs once the short sleep in progress ends.
    let script = "trap 'echo term >> /out/log; sleep 0.3; echo flushed >> /out/log; exit 0' TERM; \
                  echo up >> /out/log; while :; do sleep 0.05; done";
    docker(&[
        "run",
        "-d",
        "--name",
        &id,
        "--no-healthcheck",
        "-v",
        &format!("{}:/out", out.display()),
        OK,
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]);
    let body = format!(
        "[[component]]\nname = \"web\"\ndriver = \"docker\"\ncontainer = \"{id}\"\nstop_grace = \"800ms\"\n\
         min_uptime = \"1s\"\nhealth_timeout = \"30s\"\n"
    );
    let s = stack(dir.path(), &body);
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    docker(&["update", "--restart", "always", &id]);

    let r = s.rollback(&snap.id, opts()).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let log = std::fs::read_to_string(out.join("log")).unwrap();
    assert!(log.contains("term\nflushed\n"), "the old container was killed before it flushed: {log:?}");
    assert_eq!(inspect(&id)["State"]["Running"], true);
    let plan = s.plan(&snap.id, &Scope::Complete).await.unwrap();
    assert!(plan.steps.iter().any(|st| st.description.contains("stop grace 800ms")), "{:?}", plan.steps);
}

/// A service that ignores SIGTERM is killed once the exact grace has passed, not at the
/// next whole second; and one stopped so is not started again by its restart policy.
#[tokio::test]
async fn a_sub_second_grace_kills_at_the_grace_and_the_restart_policy_leaves_it_stopped() {
    let id = uid();
    let _c = Cleanup { containers: vec![id.clone()], networks: vec![], volumes: vec![] };
    let dir = tempfile::tempdir().unwrap();
    // The test image ignores SIGTERM (httpd as PID 1).
    docker(&["run", "-d", "--name", &id, "--restart", "always", OK]);
    wait_healthy(&id);
    let body =
        format!("[[component]]\nname = \"web\"\ndriver = \"docker\"\ncontainer = \"{id}\"\nstop_grace = \"1500ms\"\n");
    let s = stack(dir.path(), &body);
    let driver = s.driver("web").unwrap();
    let ctx = Context::new("web", s.store().clone(), dir.path());
    let t = Instant::now();
    driver.stop(&ctx).await.unwrap();
    let took = t.elapsed();
    // Only a lower bound: the engine rounds 1.5 s down to 1 s when nothing keeps the rest.
    assert!(took >= Duration::from_millis(1500), "killed after {took:?}, before the 1.5 s grace");
    std::thread::sleep(Duration::from_secs(2));
    let i = inspect(&id);
    assert_eq!(i["State"]["Running"], false, "the restart policy started it again");
    driver.start(&ctx).await.unwrap();
    assert_eq!(inspect(&id)["State"]["Running"], true);
}

/// Docker's restart count is restarts by the restart policy after an exit: an operator's
/// `docker restart` does not read as a crash loop (the engine sets the count back to 0).
#[tokio::test]
async fn a_docker_restart_by_hand_is_not_a_crash_loop() {
    let id = uid();
    let _c = Cleanup { containers: vec![id.clone()], networks: vec![], volumes: vec![] };
    let dir = tempfile::tempdir().unwrap();
    docker(&["run", "-d", "--name", &id, "--no-healthcheck", "--restart", "always", OK]);
    let s = stack(
        dir.path(),
        &format!(
            "{}\n[watch]\ninterval = \"300ms\"\nwindow = 4\nfailure_limit = 1\n\n\
             [[watch.probe]]\nname = \"loop\"\nprocess = \"web\"\nrestarts = 0\ntimeout = \"30s\"\n",
            component("web", &id)
        ),
    );
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    let restarts = {
        let id = id.clone();
        std::thread::spawn(move || {
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(1200));
                docker(&["restart", "-t", "0", &id]);
            }
        })
    };
    let started = inspect(&id)["State"]["StartedAt"].clone();
    let r = s
        .watch(rollback_core::WatchOptions {
            snapshot: Some(snap.id.clone()),
            duration: Some(Duration::from_secs(6)),
            ..Default::default()
        })
        .await
        .unwrap();
    restarts.join().unwrap();
    assert_ne!(inspect(&id)["State"]["StartedAt"], started, "the container was restarted");
    assert_eq!(r.outcome, rollback_core::WatchOutcome::Elapsed, "{r:?}");
}
