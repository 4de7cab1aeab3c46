//! `railproxy delta …` run as a user runs it: the real binary, real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use delta::testing::PageGenerator;

fn railproxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_railproxy")).args(args).output().expect("run railproxy")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Two consecutive generated page versions written to files.
fn two_versions(dir: &Path) -> (PathBuf, PathBuf, Vec<Vec<u8>>) {
    let v = PageGenerator::versions(3, 30_000, 2);
    let (old, new) = (dir.join("old.html"), dir.join("new.html"));
    std::fs::write(&old, &v[0]).unwrap();
    std::fs::write(&new, &v[1]).unwrap();
    (old, new, v)
}

#[test]
fn encode_then_decode_restores_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new, v) = two_versions(dir.path());
    let delta = dir.path().join("new.dcz");
    let out = dir.path().join("restored.html");
    let o = railproxy(&["delta", "encode", "--base", s(&old), s(&new), "-o", s(&delta)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let encoded = std::fs::read(&delta).unwrap();
    assert!(encoded.len() < v[1].len() / 10, "delta of {} bytes", encoded.len());
    assert_eq!(&encoded[..4], &[0x5e, 0x2a, 0x4d, 0x18]);
    let o = railproxy(&["delta", "decode", "--base", s(&old), s(&delta), "-o", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(&out).unwrap() == v[1]);
}

#[test]
fn dash_writes_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new, v) = two_versions(dir.path());
    let o = railproxy(&["delta", "encode", "--base", s(&old), s(&new), "-o", "-"]);
    assert!(o.status.success());
    let delta = dir.path().join("d");
    std::fs::write(&delta, &o.stdout).unwrap();
    let o = railproxy(&["delta", "decode", "--base", s(&old), s(&delta), "-o", "-"]);
    assert!(o.status.success());
    assert!(o.stdout == v[1]);
}

#[test]
fn plain_level_is_available() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new, _) = two_versions(dir.path());
    let o = railproxy(&["delta", "encode", "--level", "19", "--base", s(&old), s(&new), "-o", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn decoding_against_the_wrong_base_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new, _) = two_versions(dir.path());
    let delta = dir.path().join("new.dcz");
    assert!(railproxy(&["delta", "encode", "--base", s(&old), s(&new), "-o", s(&delta)]).status.success());
    let out = dir.path().join("out");
    let o = railproxy(&["delta", "decode", "--base", s(&new), s(&delta), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    assert!(stderr(&o).contains("delta is against base"), "{}", stderr(&o));
    assert!(!out.exists());

    let mut corrupt = std::fs::read(&delta).unwrap();
    let last = corrupt.len() - 2;
    corrupt[last] ^= 0x55;
    std::fs::write(&delta, corrupt).unwrap();
    let o = railproxy(&["delta", "decode", "--base", s(&old), s(&delta), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn decode_limit_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new, _) = two_versions(dir.path());
    let delta = dir.path().join("new.dcz");
    assert!(railproxy(&["delta", "encode", "--base", s(&old), s(&new), "-o", s(&delta)]).status.success());
    let o = railproxy(&["delta", "decode", "--max-output", "1k", "--base", s(&old), s(&delta), "-o", "-"]);
    assert_eq!(o.status.code(), Some(65));
    assert!(stderr(&o).contains("exceeds the limit of 1024 bytes"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
}

#[test]
fn unreadable_input_names_the_file() {
    let o = railproxy(&["delta", "encode", "--base", "/nonexistent/old", "/nonexistent/new", "-o", "-"]);
    assert_eq!(o.status.code(), Some(66));
    assert!(stderr(&o).contains("/nonexistent/old"), "{}", stderr(&o));
}

#[test]
fn bench_prints_a_row_per_source_and_a_total() {
    let dir = tempfile::tempdir().unwrap();
    for (name, size) in [("small", 8_000), ("large", 120_000)] {
        let sub = dir.path().join(name);
        std::fs::create_dir(&sub).unwrap();
        for (i, v) in PageGenerator::versions(size as u64, size, 4).iter().enumerate() {
            std::fs::write(sub.join(format!("{i:03}.html")), v).unwrap();
        }
    }
    let o = railproxy(&["delta", "bench", "--repeat", "1", s(dir.path())]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let needles = [
        "| small",
        "| large",
        "| total",
        "dcz sent",
        "dcz fast sent",
        "zstd -3 sent",
        "gzip -6 sent",
        "required <= 0.40 %",
    ];
    for needle in needles {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let total = text.lines().find(|l| l.starts_with("| total")).unwrap();
    let cells: Vec<&str> = total.split('|').map(str::trim).collect();
    assert_eq!(cells[2], "6", "3 pairs in each of 2 sources: {total}");
    assert_eq!(cells.len(), 21, "source, pairs, raw, 4 cells for each of 4 methods, between 2 edges: {total}");

    // One source folder directly works too.
    let o = railproxy(&["delta", "bench", "--repeat", "1", s(&dir.path().join("small"))]);
    assert!(o.status.success());
}

#[test]
fn bench_without_versions_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = railproxy(&["delta", "bench", s(dir.path())]);
    assert_eq!(o.status.code(), Some(66));
    assert!(stderr(&o).contains("no 000.*, 001.*"), "{}", stderr(&o));
}

#[test]
fn explain_summarises_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new, _) = two_versions(dir.path());
    let o = railproxy(&["delta", "explain", "--base", s(&old), s(&new)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("lines:") && text.contains("added"), "{text}");
    assert!(text.contains("dcz delta"), "{text}");
    assert!(text.contains("@@ -"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("+ ")), "{text}");
}

#[test]
fn help_and_version() {
    let o = railproxy(&["--version"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("railproxy "));
    let o = railproxy(&["delta", "--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for cmd in ["encode", "decode", "bench", "explain"] {
        assert!(help.contains(cmd), "{help}");
    }
}
