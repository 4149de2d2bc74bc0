//! The guide does not rot: every relative link in README.md and docs/ resolves,
//! and the README links every page of docs/.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn links(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = md;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        if let Some(j) = after.find(')') {
            out.push(after[..j].to_string());
        }
        rest = &rest[i + 2..];
    }
    out
}

#[test]
fn relative_links_resolve_and_readme_links_every_page() {
    let root = root();
    let mut pages = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                pages.push(p);
            }
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for l in links(&text) {
            if l.starts_with("http://") || l.starts_with("https://") || l.starts_with('#') || l.starts_with("mailto:") {
                continue;
            }
            let target = l.split('#').next().unwrap();
            let p = page.parent().unwrap().join(target);
            if !p.exists() {
                broken.push(format!("{} -> {l}", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    // pages[0] is the README itself.
    for page in pages.iter().skip(1) {
        let name = page.strip_prefix(&root).unwrap().to_string_lossy().to_string();
        assert!(readme.contains(&format!("]({name}")), "README does not link {name}");
    }
}
