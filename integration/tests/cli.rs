//! The command line as operators use it: check, certs, help, and configuration errors.

use integration::process::{railproxy, repo, text};

/// A folder with certs/ and conf/ as in the repository root.
fn demo_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    for f in ["edge.yaml", "origin.yaml", "edge-dialout.yaml", "origin-dialout.yaml"] {
        std::fs::copy(repo().join("conf").join(f), dir.path().join("conf").join(f)).unwrap();
    }
    let o = railproxy(dir.path(), &["certs", "--out", "certs"]);
    assert!(o.status.success(), "{}", text(&o));
    dir
}

#[test]
fn demo_configs_check_out() {
    let dir = demo_dir();
    for (file, mode) in [
        ("conf/edge.yaml", "edge"),
        ("conf/origin.yaml", "origin"),
        ("conf/edge-dialout.yaml", "edge"),
        ("conf/origin-dialout.yaml", "origin"),
    ] {
        let o = railproxy(dir.path(), &["check", "-c", file]);
        assert!(o.status.success(), "{file}: {}", text(&o));
        assert!(text(&o).contains(&format!("ok ({mode} configuration)")));
    }
}

#[test]
fn check_warns_of_a_certificate_that_expires_within_three_weeks() {
    let dir = demo_dir();
    let d = dir.path();
    let args = ["certs", "issue", "--ca", "certs", "--role", "edge", "--name", "edge.railproxy.internal"];
    let o = railproxy(d, &[&args[..], &["--days", "5", "--out", "short"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    for ext in ["pem", "key"] {
        std::fs::copy(d.join(format!("short/edge.railproxy.internal.{ext}")), d.join(format!("certs/edge.{ext}")))
            .unwrap();
    }
    let o = railproxy(d, &["check", "-c", "conf/edge.yaml"]);
    let out = text(&o);
    println!("{out}");
    // A warning, not a refusal: the edge would still serve its cache and fallback.
    assert!(o.status.success() && out.contains("ok (edge configuration)"), "{out}");
    let warning = out.lines().find(|l| l.starts_with("warning: tunnel.cert: ")).unwrap_or_else(|| panic!("{out}"));
    assert!(warning.contains("certs/edge.pem expires on ") && warning.contains(" days"), "{warning}");
    let o = railproxy(d, &["check", "-c", "conf/origin.yaml"]);
    assert!(o.status.success() && !text(&o).contains("warning"), "a two-year certificate: {}", text(&o));
}

#[test]
fn a_key_that_is_not_the_certificates_is_a_problem_of_check() {
    let dir = demo_dir();
    let d = dir.path();
    std::fs::copy(d.join("certs/origin.key"), d.join("certs/edge.key")).unwrap();
    let o = railproxy(d, &["check", "-c", "conf/edge.yaml"]);
    let out = text(&o);
    println!("{out}");
    assert_eq!(o.status.code(), Some(64), "{out}");
    assert!(out.contains("tunnel.cert: ") && out.contains("do not make a usable certificate"), "{out}");
}

#[test]
fn every_problem_is_listed_with_its_key_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "mode: edge
listen: [127.0.0.1:notaport]
admin: {listen: 127.0.0.1:9101, colour: blue}
tunnel: {ca: /nonexistent/ca.pem, max_streams: 0, connect_timeout: soon, lanes: 0, congestion_control: warp}
origins:
  example.com: {listeners: []}
delta: {store_size: 1M, max_body: 8M}
limits: {methods: [GET, CONNECT, get]}
typo_key: 1
",
    )
    .unwrap();
    let o = railproxy(dir.path(), &["check", "-c", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let out = text(&o);
    for expected in [
        "listen[0]: \"127.0.0.1:notaport\" is not an IP address and port",
        "admin.colour: unknown key",
        "tunnel.max_streams: must be at least 1",
        "tunnel.connect_timeout: \"soon\" is not a duration",
        "tunnel.lanes: must be from 1 to 64",
        "tunnel.congestion_control: \"warp\" is refused by this kernel",
        "origins.example.com.listeners: must not be empty",
        "delta.max_body: 8388608 is more than store_size",
        "typo_key: unknown key",
        "tunnel.ca: cannot read /nonexistent/ca.pem",
        // Mutual TLS is not optional: the edge must have a client certificate.
        "tunnel.cert: required",
        "tunnel.key: required",
        "limits.methods: CONNECT cannot be allowed",
        "limits.methods: \"get\" is not a method name",
        "14 problems",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn origin_problems_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("o.yaml");
    std::fs::write(&file, "mode: origin\nadmin: {}\ntunnel: {listen: 127.0.0.1:2408, client_names: [edge.example, \"not a name\"], stream_window: 1K, connection_window: 4G, congestion_control: warp}\nhosts: {a: {backends: [1.2.3.4:80]}, A: {backends: [1.2.3.4:81]}}\nfull_level: 40\ndelta: {effort: turbo}\n").unwrap();
    let o = railproxy(dir.path(), &["check", "-c", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64));
    let out = text(&o);
    for expected in [
        "admin.listen: required",
        "tunnel.cert: required",
        "tunnel.key: required",
        "tunnel.client_ca: required",
        "tunnel.client_names: \"not a name\" is not a DNS name or IP address",
        "hosts.A: host a is listed twice",
        "full_level: must be a zstd level",
        "tunnel.stream_window: must be from 64K",
        "tunnel.connection_window: must be from 64K",
        "tunnel.congestion_control: \"warp\" is refused by this kernel",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn version_keeping_and_store_problems_name_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let edge = dir.path().join("e.yaml");
    std::fs::write(
        &edge,
        "mode: edge\nlisten: [127.0.0.1:1]\nadmin: {listen: 127.0.0.1:2}\ntunnel: {ca: a, cert: b, key: c}\n\
         origins:\n  a.example: {listeners: [127.0.0.1:3], shared_bases: [news/], cookies: [\"a=b\"]}\n\
         delta: {version_ttl: 0}\ncredentials: {headers: [Cookie, \"not a name\"]}\n",
    )
    .unwrap();
    let o = railproxy(dir.path(), &["check", "-c", edge.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let out = text(&o);
    for expected in [
        "origins.a.example.shared_bases: \"news/\" must start with /",
        "origins.a.example.cookies: \"a=b\" is not a cookie name",
        "delta.version_ttl: must be at least 1s",
        "credentials.headers: Cookie: always a credential",
        "credentials.headers: \"not a name\" is not a header name",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let origin = dir.path().join("o.yaml");
    let head = "mode: origin\nadmin: {listen: 127.0.0.1:1}\ntunnel: {listen: [127.0.0.1:2], cert: a, key: b, client_ca: c}\n\
                hosts: {a.example: {backends: [127.0.0.1:3]}}\n";
    for (delta, expected) in [
        ("{store: \"redis://:hunter2@127.0.0.1:6379/0\"}", "delta.store: holds a password"),
        ("{store: \"redis://127.0.0.1:6379/0\", store_ttl: 24h}", "delta.store_ttl: replaced by delta.version_ttl"),
        (
            "{store: \"redis://127.0.0.1:6379/0\", store_tls: {ca: c}}",
            "delta.store_tls: only used with store: rediss://",
        ),
        ("{store: memory, store_password_file: p}", "delta.store_password_file: only used with store: redis://"),
        (
            "{store: \"rediss://127.0.0.1:6379/0\", store_tls: {cert: a}}",
            "delta.store_tls.key: cert and key go together",
        ),
        (
            "{store: \"rediss://127.0.0.1:6379/0\", store_password_file: /nonexistent/pw}",
            "delta.store_password_file: cannot read",
        ),
    ] {
        std::fs::write(&origin, format!("{head}delta: {delta}\n")).unwrap();
        let o = railproxy(dir.path(), &["check", "-c", origin.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(64), "{delta}: {}", text(&o));
        let out = text(&o);
        assert!(out.contains(expected), "{delta}: missing {expected:?} in:\n{out}");
        assert!(!out.contains("hunter2"), "the password is repeated:\n{out}");
    }
}

#[test]
fn tunnel_allow_takes_address_blocks_and_names_a_bad_one() {
    let dir = demo_dir();
    let origin = dir.path().join("o.yaml");
    let head = "mode: origin\nadmin: {listen: 127.0.0.1:1}\nhosts: {a.example: {backends: [127.0.0.1:3]}}\n";
    let tunnel = |allow: &str| {
        format!("{head}tunnel: {{listen: [127.0.0.1:2], cert: a, key: b, client_ca: c, allow: {allow}}}\n")
    };
    for (allow, expected) in [
        (
            "[10.1.2.3/8]",
            "tunnel.allow[0]: \"10.1.2.3/8\" has bits set past its prefix length: did you mean 10.0.0.0/8?",
        ),
        ("[10.0.0.0/8, edge.example]", "tunnel.allow[1]: \"edge.example\" is not an address block"),
        ("[10.0.0.0/33]", "tunnel.allow[0]: \"10.0.0.0/33\" is not an address block"),
        ("[]", "tunnel.allow: must not be empty"),
    ] {
        std::fs::write(&origin, tunnel(allow)).unwrap();
        let o = railproxy(dir.path(), &["check", "-c", origin.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(64), "{allow}: {}", text(&o));
        assert!(text(&o).contains(expected), "{allow}: missing {expected:?} in:\n{}", text(&o));
    }
    // Blocks of both families and bare addresses are taken.
    std::fs::write(&origin, tunnel("[10.0.0.0/8, 192.0.2.7, \"2001:db8::/32\", \"::1\"]")).unwrap();
    let o = railproxy(dir.path(), &["check", "-c", origin.to_str().unwrap()]);
    assert!(!text(&o).contains("tunnel.allow"), "{}", text(&o));
}

#[test]
fn syntax_errors_missing_mode_and_mode_mismatch_exit_64() {
    let dir = demo_dir();
    let bad = dir.path().join("syntax.yaml");
    std::fs::write(&bad, "mode: edge\nlisten: [unclosed\n").unwrap();
    let o = railproxy(dir.path(), &["check", "-c", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o).contains("not valid YAML"), "{}", text(&o));

    std::fs::write(&bad, "listen: [127.0.0.1:1]\n").unwrap();
    let o = railproxy(dir.path(), &["check", "-c", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o).contains("mode: required"), "{}", text(&o));

    let o = railproxy(dir.path(), &["--mode", "origin", "-c", "conf/edge.yaml"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o).contains("the file says edge, but --mode says origin"), "{}", text(&o));

    let o = railproxy(dir.path(), &["check", "-c", "conf/missing.yaml"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o).contains("conf/missing.yaml") && text(&o).contains("cannot read"), "{}", text(&o));

    let o = railproxy(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o).contains("give --mode and -c FILE"));
}

#[test]
fn certs_are_idempotent_and_keys_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let o = railproxy(dir.path(), &["certs", "--out", "c"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o).matches("created").count(), 5);
    let files = [
        "ca.pem",
        "ca.key",
        "origin.pem",
        "origin.key",
        "edge.pem",
        "edge.key",
        "connector.pem",
        "connector.key",
        "tunnel-demo.pem",
        "tunnel-demo.key",
    ];
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(dir.path().join("c").join(f)).unwrap()).collect();
    for f in ["ca.key", "origin.key", "edge.key", "connector.key", "tunnel-demo.key"] {
        let mode = std::fs::metadata(dir.path().join("c").join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let o = railproxy(dir.path(), &["certs", "--out", "c"]);
    assert!(o.status.success());
    assert_eq!(text(&o).matches("kept").count(), 5);
    let after: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(dir.path().join("c").join(f)).unwrap()).collect();
    assert_eq!(before, after, "a second run changed files");
    // A missing leaf is issued from the existing CA.
    std::fs::remove_file(dir.path().join("c/edge.pem")).unwrap();
    std::fs::remove_file(dir.path().join("c/edge.key")).unwrap();
    let o = railproxy(dir.path(), &["certs", "--out", "c"]);
    assert!(o.status.success());
    assert!(text(&o).contains("created") && text(&o).contains("edge.pem"));
    assert_eq!(std::fs::read(dir.path().join("c/ca.pem")).unwrap(), before[0]);
}

#[test]
fn help_names_modes_commands_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let o = railproxy(dir.path(), &["--help"]);
    assert!(o.status.success());
    for s in ["--mode", "--config", "check", "certs", "fleet", "delta", "--upgrade", "--daemon", "Exit status"] {
        assert!(text(&o).contains(s), "--help lacks {s}");
    }
    let o = railproxy(dir.path(), &["certs", "--help"]);
    for f in ["ca.pem", "ca.key", "origin.pem", "origin.key", "edge.pem", "edge.key"] {
        assert!(text(&o).contains(f), "certs --help lacks {f}");
    }
    let o = railproxy(dir.path(), &["--version"]);
    assert!(text(&o).starts_with("railproxy "));
}
