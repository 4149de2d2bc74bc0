//! The `dokku` driver against a STAND-IN: Dokku cannot run on this machine, so these
//! tests write a fake `dokku` (and `docker`) shell script that implements the documented
//! command formats and outputs (`ps:inspect`, `apps:report`/`ps:report --format json`,
//! `config:export --format json`, `config:set --encoded --no-restart`, `config:unset`,
//! `git:from-image`, `ps:restart`) and logs every argv it receives. The tests assert
//! the exact command sequence, and that config values (secrets) never reach the
//! manifest, the logged argv in clear, or an error.
#![cfg(feature = "driver-dokku")]

use std::path::{Path, PathBuf};

use rollback_core::{Context, Part, Registry, RollbackOptions, Scope, SnapshotOptions, Stack, StackConfig, Status};

const SECRET: &str = "pg-pass-Zq81x";
const BAD_SECRET: &str = "leaked-in-bad-deploy-77";
const DIGEST: &str = "registry.example.com/shop@sha256:4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// The stand-in `dokku`: state in files beside it, argv appended to `argv.log`.
const FAKE_DOKKU: &str = include_str!("common/dokku-standin.sh");

/// The stand-in `docker` on the Dokku host: knows the images listed in `images`.
const FAKE_DOCKER: &str = include_str!("common/docker-standin.sh");

struct Fake {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fake {
    fn new(digests: &str) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let f = Fake { _dir: dir, root };
        f.write("dokku", FAKE_DOKKU);
        f.write("docker", FAKE_DOCKER);
        for s in ["dokku", "docker"] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f.root.join(s), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        f.write("image", "sha256:good1\n");
        f.write("source", "git-push\n");
        f.write("meta", "\n");
        f.write("digests", digests);
        f.write("images", &format!("{DIGEST}\n"));
        f.write("config", &format!("DATABASE_URL\tpostgres://shop:{SECRET}@db/shop\nMODE\tlive\n"));
        f.write("argv.log", "");
        f
    }

    fn write(&self, name: &str, s: &str) {
        std::fs::write(self.root.join(name), s).unwrap();
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.root.join(name)).unwrap()
    }

    fn take_log(&self) -> Vec<String> {
        let l = self.read("argv.log").lines().map(String::from).collect();
        self.write("argv.log", "");
        l
    }

    /// The bad deploy: another image, a changed secret, an added key.
    fn bad_deploy(&self) {
        self.write("image", "sha256:bad2\n");
        self.write("meta", "\n");
        self.write("config", &format!("DATABASE_URL\tpostgres://shop:{BAD_SECRET}@db/shop\nMODE\tlive\nDEBUG\t1\n"));
    }

    fn stack(&self) -> Stack {
        let text = format!(
            "[store]\npath = \"{}\"\n[[component]]\nname = \"web\"\ndriver = \"dokku\"\napp = \"shop\"\ndokku_bin = \"{}\"\ndocker_bin = \"{}\"\n",
            self.root.join("store").display(),
            self.root.join("dokku").display(),
            self.root.join("docker").display()
        );
        let cfg = StackConfig::from_toml_str(&text, None, &self.root, &|_| None).unwrap();
        Stack::new(cfg, &Registry::with_default_drivers()).unwrap()
    }
}

fn b64(s: &str) -> String {
    let out = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    out.stdin.as_ref().unwrap().write_all(s.as_bytes()).unwrap();
    String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap()
}

fn manifest_text(root: &Path, id: &str) -> String {
    let mut all = String::new();
    for e in walk(&root.join("store/snapshots")) {
        if e.to_string_lossy().contains(id) {
            all.push_str(&std::fs::read_to_string(e).unwrap());
        }
    }
    all
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                v.extend(walk(&p));
            } else {
                v.push(p);
            }
        }
    }
    v
}

#[tokio::test]
async fn capture_and_restore_run_the_documented_commands_in_order() {
    let f = Fake::new(&format!("[\"{DIGEST}\"]\n"));
    let s = f.stack();
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    let tag = format!("dokku/shop:rollback-{}", snap.id.to_lowercase());
    assert_eq!(
        f.take_log(),
        vec![
            "dokku ps:inspect shop".to_string(),
            "dokku apps:report shop --format json".into(),
            "docker image inspect --format {{json .RepoDigests}} sha256:good1".into(),
            format!("docker image tag sha256:good1 {tag}"),
            "dokku config:export shop --format json".into(),
        ]
    );
    let st = &snap.parts[0].state;
    assert_eq!(st["deploy_ref"], DIGEST, "the digest, not a tag git:from-image may have seen");
    assert_eq!(st["config_keys"], serde_json::json!(["DATABASE_URL", "MODE"]));
    assert!(!manifest_text(&f.root, &snap.id).contains(SECRET) && !st.to_string().contains(SECRET));

    f.bad_deploy();
    let v = s.verify(&snap.id, &[]).await.unwrap();
    let text = v.components["web"].differences.join("\n");
    assert!(text.contains("config DATABASE_URL differs") && text.contains("config DEBUG was added"), "{text}");
    assert!(text.contains("does not run the snapshot's image"), "{text}");
    assert!(!text.contains(BAD_SECRET) && !text.contains(SECRET), "{text}");
    f.take_log();

    // The restore alone, through the driver: the exact sequence.
    let driver = s.driver("web").unwrap();
    let ctx = Context::new("web", s.store().clone(), &f.root);
    driver.restore(&ctx, &snap.parts[0]).await.unwrap();
    let log = f.take_log();
    // Only the changed value travels (MODE is unchanged), then the added key goes.
    let set = format!(
        "dokku config:set --encoded --no-restart shop DATABASE_URL={}",
        b64(&format!("postgres://shop:{SECRET}@db/shop"))
    );
    assert_eq!(
        log,
        vec![
            "dokku config:export shop --format json".to_string(),
            "dokku ps:inspect shop".into(),
            "dokku apps:report shop --format json".into(),
            set,
            "dokku config:unset --no-restart shop DEBUG".into(),
            format!("dokku git:from-image shop {DIGEST}"),
            "dokku ps:report shop --format json".into(),
        ]
    );
    assert!(!log.join("\n").contains(SECRET), "config values travel base64-encoded");
    assert_eq!(
        sorted_lines(&f.read("config")),
        [format!("DATABASE_URL\tpostgres://shop:{SECRET}@db/shop"), "MODE\tlive".into()]
    );
    assert_eq!(f.read("meta").trim(), DIGEST);
    assert!(driver.verify(&ctx, &snap.parts[0]).await.unwrap().ok);

    // Again: already there, so only reads.
    f.take_log();
    driver.restore(&ctx, &snap.parts[0]).await.unwrap();
    let log = f.take_log();
    assert!(
        log.iter().all(|l| l.contains("config:export") || l.contains("ps:inspect") || l.contains("apps:report")),
        "{log:?}"
    );

    // Only the config drifted: restored, then one restart (no redeploy).
    f.write("config", "MODE\tdebug\n");
    driver.restore(&ctx, &snap.parts[0]).await.unwrap();
    let log = f.take_log();
    assert!(log.contains(&"dokku ps:restart shop".to_string()), "{log:?}");
    assert!(!log.iter().any(|l| l.contains("git:from-image")), "{log:?}");

    // gc releases the protecting tag.
    driver.release(&ctx, &snap.parts[0]).await.unwrap();
    assert_eq!(f.take_log(), vec![format!("docker image rm {tag}")]);
}

#[tokio::test]
async fn a_locally_built_image_is_redeployed_by_its_protecting_tag_through_the_stack() {
    let f = Fake::new("[]\n");
    let s = f.stack();
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    let tag = format!("dokku/shop:rollback-{}", snap.id.to_lowercase());
    assert_eq!(snap.parts[0].state["deploy_ref"], tag.as_str());
    f.bad_deploy();
    let r = s
        .rollback(
            &snap.id,
            RollbackOptions { scope: Scope::Complete, trigger: Some("test".into()), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(f.read("argv.log").contains(&format!("dokku git:from-image shop {tag}")));
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    assert!(!r.to_json().contains(SECRET) && !r.to_json().contains(BAD_SECRET));
}

#[tokio::test]
async fn a_failed_redeploy_puts_the_config_back_and_leaks_no_secret() {
    let f = Fake::new(&format!("[\"{DIGEST}\"]\n"));
    let s = f.stack();
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    f.bad_deploy();
    f.write("fail-deploy", "");
    let driver = s.driver("web").unwrap();
    let ctx = Context::new("web", s.store().clone(), &f.root);
    let e = driver.restore(&ctx, &snap.parts[0]).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("web") && msg.contains("git:from-image") && msg.contains("previous config was put back"),
        "{msg}"
    );
    assert!(!msg.contains(SECRET) && !msg.contains(BAD_SECRET), "secret in error: {msg}");
    // The bad deploy's config is what the running containers use: put back.
    assert_eq!(
        sorted_lines(&f.read("config")),
        [format!("DATABASE_URL\tpostgres://shop:{BAD_SECRET}@db/shop"), "DEBUG\t1".into(), "MODE\tlive".into()]
    );
}

#[tokio::test]
async fn an_interrupted_config_restore_never_leaves_the_app_without_config() {
    let f = Fake::new(&format!("[\"{DIGEST}\"]\n"));
    let s = f.stack();
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    f.bad_deploy();
    let deployed = f.read("config");
    // The connection drops as the config is being put back.
    f.write("fail-set", "");
    let driver = s.driver("web").unwrap();
    let ctx = Context::new("web", s.store().clone(), &f.root);
    let e = driver.restore(&ctx, &snap.parts[0]).await.unwrap_err();
    assert!(!e.to_string().contains(SECRET) && !e.to_string().contains(BAD_SECRET), "{e}");
    assert_eq!(f.read("config"), deployed, "the app keeps a whole config, never an empty one");
    assert!(!f.read("argv.log").contains("config:clear"), "{}", f.read("argv.log"));

    // Run again once the host answers: put back whole.
    std::fs::remove_file(f.root.join("fail-set")).unwrap();
    driver.restore(&ctx, &snap.parts[0]).await.unwrap();
    assert!(driver.verify(&ctx, &snap.parts[0]).await.unwrap().ok);
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(String::from).collect();
    v.sort();
    v
}

#[tokio::test]
async fn unknown_app_missing_tool_and_foreign_snapshot_give_clear_errors() {
    let f = Fake::new("[]\n");
    let s = f.stack();
    // An app without containers: ps:inspect prints nothing.
    f.write("dokku", "#!/bin/sh\n[ \"$1\" = ps:inspect ] && exit 0\nexit 1\n");
    let e = s.snapshot(SnapshotOptions::default()).await.unwrap_err();
    assert!(e.to_string().contains("web") && e.to_string().contains("no deployed container"), "{e}");

    std::fs::remove_file(f.root.join("dokku")).unwrap();
    let e = s.snapshot(SnapshotOptions::default()).await.unwrap_err();
    assert!(e.to_string().contains("web") && e.to_string().contains("cannot run"), "{e}");

    let driver = s.driver("web").unwrap();
    let ctx = Context::new("web", s.store().clone(), &f.root);
    let part = Part {
        component: "web".into(),
        driver: "git".into(),
        phase: 1,
        state: serde_json::json!({ "commit": "abc" }),
        artifacts: vec![],
        capture_ms: 0,
    };
    let e = driver.restore(&ctx, &part).await.unwrap_err();
    assert!(e.to_string().contains("web") && e.to_string().contains("not a dokku capture"), "{e}");
}
