//! docs/operations.md: its `sh` blocks run, in order, on a copy of conf/ and deploy/, with the
//! built `railproxy` first on PATH; every other command block names what exercises it, and that
//! must exist.

use std::path::Path;
use std::process::Command;

use integration::process::{bin_dir, repo};

/// Fenced blocks: (language, text).
fn blocks(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => open = Some((lang.trim().to_string(), String::new())),
            (Some(_), Some(_)) => out.push(open.take().unwrap()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "unclosed code block");
    out
}

fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().map(Result::unwrap) {
        let name = e.file_name().to_string_lossy().into_owned();
        if skip.contains(&name.as_str()) {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(&name), skip);
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

#[test]
fn every_command_in_the_operations_guide_runs_or_names_its_test() {
    let guide = std::fs::read_to_string(repo().join("docs/operations.md")).unwrap();
    let blocks = blocks(&guide);
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&repo().join("conf"), &dir.path().join("conf"), &[]);
    // A checkout's own fleet CA, rendered targets or build output would make this run differ.
    copy_tree(&repo().join("deploy"), &dir.path().join("deploy"), &["ca", "railproxy.yml"]);
    let path = format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let (mut ran, mut named) = (0, 0);
    for (lang, text) in &blocks {
        match lang.as_str() {
            "sh" => {
                println!("$ {}", text.trim_end().replace('\n', "\n$ "));
                let o = Command::new("bash")
                    .args(["-euo", "pipefail", "-c", text])
                    .current_dir(dir.path())
                    .env("PATH", &path)
                    .output()
                    .unwrap();
                let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
                assert!(o.status.success(), "docs/operations.md block failed:\n{text}\n{out}");
                ran += 1;
            }
            "console" => {
                let by = text
                    .lines()
                    .find_map(|l| l.strip_prefix("# exercised by:"))
                    .unwrap_or_else(|| panic!("a console block names no test (# exercised by: …):\n{text}"));
                let refs: Vec<&str> = by
                    .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
                    .filter(|w| w.ends_with(".rs") || *w == "Makefile")
                    .collect();
                let demo = by.contains("make demo");
                assert!(!refs.is_empty() || demo, "{by:?} names no test file, Makefile or make demo");
                for r in refs {
                    assert!(repo().join(r).exists(), "{r}, named by docs/operations.md, does not exist");
                }
                if demo {
                    let script = std::fs::read_to_string(repo().join("scripts/demo.sh")).unwrap();
                    let cmd = text.lines().find(|l| !l.starts_with('#')).unwrap_or_default();
                    let first = cmd.split_whitespace().next().unwrap_or_default();
                    assert!(script.contains(first), "make demo does not run {first}");
                }
                named += 1;
            }
            "text" => {}
            other => {
                panic!("code block language {other:?}: use sh (run by this test), console (names its test) or text")
            }
        }
    }
    println!("docs/operations.md: {ran} sh blocks ran, {named} console blocks name their tests");
    assert!(ran >= 5 && named >= 5, "{ran} run, {named} named");
    assert!(dir.path().join("build/fleet/edge-fra-1/tls/edge-fra-1.pem").exists(), "the rotation block re-issued it");
}
