//! Fleet deployment: `railproxy fleet render` on the example inventory and on broken ones, and
//! the Ansible playbook run for real (`-c local`) into a temporary root, after which the
//! installed edge and origin are started and upgraded with the commands of their installed
//! systemd units (systemd itself does not run here) and serve a backend's exact bytes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use delta::testing;
use integration::process::{bin, free_port, railproxy, repo, text};
use integration::tls_client::{https_get, not_after};
use integration::{Backend, Http, Metrics, Proc};

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            } else {
                out.push(e.path().strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn the_example_fleet_renders_and_every_config_checks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("deploy/fleet.example.yaml"), dir.path().join("fleet.yaml")).unwrap();
    let o = railproxy(dir.path(), &["certs", "ca", "--out", "ca"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = railproxy(dir.path(), &["fleet", "render", "-f", "fleet.yaml", "-o", "out"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("rendered 3 edges and 4 origins"), "{}", text(&o));
    assert!(!text(&o).contains("warning"), "{}", text(&o));
    let out = dir.path().join("out");
    let files = tree(&out);
    println!("rendered tree of deploy/fleet.example.yaml:\n  {}", files.join("\n  "));
    for (host, mode) in [
        ("edge-fra-1", "edge"),
        ("edge-fra-2", "edge"),
        ("edge-nyc-1", "edge"),
        ("origin-dc1-a", "origin"),
        ("origin-dc1-b", "origin"),
        ("origin-blog-1", "origin"),
        ("origin-lab-1", "origin"),
    ] {
        // A dial-out site's origin holds the site's tunnel certificate, not one of its own.
        let cert = if host == "origin-lab-1" { "tunnel-lab".to_string() } else { host.to_string() };
        for f in [
            format!("{host}/{mode}.yaml"),
            format!("{host}/railproxy-{mode}.service"),
            format!("{host}/tls/ca.pem"),
            format!("{host}/tls/{cert}.pem"),
            format!("{host}/tls/{cert}.key"),
        ] {
            assert!(files.contains(&f), "{f} missing from {files:?}");
        }
        // Checked again here by the binary as an operator runs it, from another folder: the
        // paths inside are relative to the file.
        let config = out.join(host).join(format!("{mode}.yaml"));
        // The example's backend and listener names resolve only inside its data centres.
        let o = railproxy(Path::new("/"), &["check", "--no-resolve", "-c", config.to_str().unwrap()]);
        assert!(o.status.success() && text(&o).contains(&format!("ok ({mode} configuration)")), "{}", text(&o));
        if host == "origin-dc1-a" {
            let o = railproxy(Path::new("/"), &["check", "-c", config.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(64), "{}", text(&o));
            assert!(text(&o).contains("app-2.dc1.internal does not resolve"), "{}", text(&o));
            let yaml = std::fs::read_to_string(&config).unwrap();
            for rendered in ["https://shop-api.dc1.internal:8443", "weight: 2", "http://app-2.dc1.internal:8080"] {
                assert!(yaml.contains(rendered), "{rendered:?} not in:\n{yaml}");
            }
        }
        if host == "edge-fra-1" {
            let yaml = std::fs::read_to_string(&config).unwrap();
            assert!(yaml.contains("origin-dc1-b.example.net:2408"), "edges dial a named listener by name:\n{yaml}");
        }
        let unit = std::fs::read_to_string(out.join(host).join(format!("railproxy-{mode}.service"))).unwrap();
        for line in [
            "Type=forking",
            "User=railproxy",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "ExecStartPre=/usr/local/bin/railproxy check -c /etc/railproxy/",
            "ExecReload=/bin/kill -QUIT $MAINPID",
            "--daemon --upgrade",
        ] {
            assert!(unit.contains(line), "{host}: unit lacks {line:?}:\n{unit}");
        }
    }
    let key_mode = std::fs::metadata(out.join("edge-fra-1/tls/edge-fra-1.key")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777, 0o600);
    // Origin listeners accept exactly the edges that send them traffic.
    let blog = std::fs::read_to_string(out.join("origin-blog-1/origin.yaml")).unwrap();
    let names: serde_yaml::Value = serde_yaml::from_str(&blog).unwrap();
    assert_eq!(names["tunnel"]["client_names"], serde_yaml::from_str::<serde_yaml::Value>("[edge-nyc-1]").unwrap());
    let inventory = std::fs::read_to_string(out.join("inventory.ini")).unwrap();
    assert!(inventory.contains("[edges]\nedge-fra-1 ansible_host=192.0.2.11"), "{inventory}");
    let targets = std::fs::read_to_string(out.join("prometheus-targets.yml")).unwrap();
    assert_eq!(targets.matches("- targets:").count(), 7, "{targets}");
    // The dial-out site: the edge serving its host takes its tunnel on a connector listener
    // and routes the host to it; its origin dials that edge and listens nowhere but admin.
    let yaml = |host: &str, mode: &str| -> serde_yaml::Value {
        serde_yaml::from_str(&std::fs::read_to_string(out.join(host).join(format!("{mode}.yaml"))).unwrap()).unwrap()
    };
    let value = |s: &str| serde_yaml::from_str::<serde_yaml::Value>(s).unwrap();
    let nyc = yaml("edge-nyc-1", "edge");
    assert_eq!(nyc["origins"]["lab.example.org"], value("{tunnel: lab}"));
    assert_eq!(nyc["connectors"]["listen"], value("['203.0.113.21:2409']"));
    assert_eq!(nyc["connectors"]["tunnels"], value("{lab: {hosts: [lab.example.org]}}"));
    assert!(files.contains(&"edge-nyc-1/tls/connector.railproxy.internal.pem".to_string()), "{files:?}");
    for edge in ["edge-fra-1", "edge-fra-2"] {
        assert!(yaml(edge, "edge").get("connectors").is_none(), "{edge} serves no dial-out site");
    }
    let lab = yaml("origin-lab-1", "origin");
    assert_eq!(lab["tunnel"]["dial"], value("['203.0.113.21:2409']"));
    assert_eq!(lab["tunnel"]["replica"], value("origin-lab-1"));
    assert!(lab["tunnel"].get("listen").is_none(), "a dial-out origin listens: {lab:?}");
    assert!(inventory.contains("origin-lab-1 ansible_host=10.9.0.5 railproxy_mode=origin"), "{inventory}");
    assert!(
        inventory.contains("railproxy_tls=tls/edge-nyc-1.pem,tls/edge-nyc-1.key,tls/connector.railproxy.internal.pem"),
        "{inventory}"
    );

    // Rendering again keeps every certificate and key.
    let cert = std::fs::read(out.join("origin-dc1-a/tls/origin-dc1-a.pem")).unwrap();
    let o = railproxy(dir.path(), &["fleet", "render", "-f", "fleet.yaml", "-o", "out"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(out.join("origin-dc1-a/tls/origin-dc1-a.pem")).unwrap(), cert);
}

#[test]
fn render_renews_the_certificates_that_no_longer_fit_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(repo().join("deploy/fleet.example.yaml"), d.join("fleet.yaml")).unwrap();
    let ok = |args: &[&str]| {
        let o = railproxy(d, args);
        assert!(o.status.success(), "railproxy {args:?}:\n{}", text(&o));
        text(&o)
    };
    ok(&["certs", "ca", "--out", "ca"]);
    ok(&["certs", "ca", "--out", "other-ca"]);
    ok(&["fleet", "render", "-f", "fleet.yaml", "-o", "out"]);
    let out = d.join("out");
    let cert = |host: &str| out.join(host).join("tls").join(format!("{host}.pem"));
    let hosts = ["edge-fra-1", "edge-fra-2", "edge-nyc-1", "origin-dc1-a", "origin-dc1-b", "origin-blog-1"];
    let before: Vec<Vec<u8>> = hosts.iter().map(|h| std::fs::read(cert(h)).unwrap()).collect();
    // Certificates an operator could have left there: one that expires in a month, one from
    // another CA, one with the wrong role.
    let replace_with = |host: &str, args: &[&str]| {
        std::fs::remove_file(cert(host)).unwrap();
        std::fs::remove_file(cert(host).with_extension("key")).unwrap();
        let tls = out.join(host).join("tls");
        let mut all = vec!["certs", "issue", "--name", host, "--out", tls.to_str().unwrap()];
        all.extend(args);
        ok(&all);
    };
    replace_with("edge-fra-1", &["--ca", "ca", "--role", "edge", "--days", "30"]);
    replace_with("edge-fra-2", &["--ca", "other-ca", "--role", "edge"]);
    replace_with("edge-nyc-1", &["--ca", "ca", "--role", "origin"]);
    // One listener's key is another's.
    let dc1 = |host: &str, ext: &str| out.join(host).join("tls").join(format!("{host}.{ext}"));
    std::fs::copy(dc1("origin-dc1-a", "key"), dc1("origin-dc1-b", "key")).unwrap();
    // And the site dc1 moves to a new server name, which its listeners' certificates must carry.
    let fleet = std::fs::read_to_string(d.join("fleet.yaml")).unwrap();
    std::fs::write(d.join("fleet.yaml"), fleet.replace("dc1.origin.railproxy.internal", "dc1.origin.example.net"))
        .unwrap();

    let t = ok(&["fleet", "render", "-f", "fleet.yaml", "-o", "out"]);
    println!("{t}");
    let line = |host: &str| {
        // As render names it: under the -o it was given.
        let path = format!("out/{host}/tls/{host}.pem");
        t.lines().find(|l| l.ends_with(&path) || l.contains(&format!("{path}: "))).unwrap_or_default().to_string()
    };
    let soon = line("edge-fra-1");
    assert!(soon.starts_with("renewed") && soon.contains("less than a third of 365 days left"), "{soon}");
    assert!(line("edge-fra-2").ends_with(": not issued by this CA"), "{}", line("edge-fra-2"));
    assert!(line("edge-nyc-1").ends_with(": not a client (edge) certificate"), "{}", line("edge-nyc-1"));
    let h = "origin-dc1-a";
    let want = format!(": names dc1.origin.railproxy.internal, {h} instead of dc1.origin.example.net, {h}");
    assert!(line(h).starts_with("renewed") && line(h).ends_with(&want), "{}", line(h));
    let mismatch = line("origin-dc1-b");
    assert!(mismatch.contains(": it and out/origin-dc1-b/tls/origin-dc1-b.key are not a usable pair ("), "{mismatch}");
    assert!(line("origin-blog-1").starts_with("kept"), "{}", line("origin-blog-1"));
    assert_eq!(std::fs::read(cert("origin-blog-1")).unwrap(), before[5]);
    // edge-fra-2's ca.pem was the other CA's, copied by `certs issue`.
    assert!(t.contains("replaced ") && t.contains("edge-fra-2/tls/ca.pem: it did not hold the CA"), "{t}");
    assert_eq!(std::fs::read(out.join("edge-fra-2/tls/ca.pem")).unwrap(), std::fs::read(d.join("ca/ca.pem")).unwrap());
    for (h, old) in hosts.iter().zip(&before).take(5) {
        assert_ne!(&std::fs::read(cert(h)).unwrap(), old, "{h} still has its first certificate");
    }
    let year = not_after(&cert("edge-fra-1")) - std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_secs() as i64;
    assert!((364 * 86_400..=365 * 86_400).contains(&year), "renewed for {} days", year / 86_400);
    let key = std::fs::metadata(cert("edge-fra-1").with_extension("key")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777, 0o600);

    // What was renewed fits: the next render keeps everything.
    let again = ok(&["fleet", "render", "-f", "fleet.yaml", "-o", "out"]);
    assert!(!again.contains("renewed") && !again.contains("replaced"), "{again}");
    // The hosts' certificates, edge-nyc-1's connector certificate and origin-lab-1's tunnel's.
    assert_eq!(again.matches("kept    ").count(), hosts.len() + 2, "{again}");
}

#[test]
fn render_warns_when_the_fleet_ca_ends_before_the_certificates_it_issues() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(repo().join("deploy/fleet.example.yaml"), d.join("fleet.yaml")).unwrap();
    let o = railproxy(d, &["certs", "ca", "--out", "ca", "--days", "100"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = railproxy(d, &["fleet", "render", "-f", "fleet.yaml", "-o", "out"]);
    let t = text(&o);
    // A warning: the certificates are issued and work until the CA ends.
    assert!(o.status.success(), "{t}");
    let warning = t.lines().find(|l| l.starts_with("warning: the fleet CA ")).unwrap_or_else(|| panic!("{t}"));
    assert!(warning.contains("ca/ca.pem expires on ") && warning.contains("(365 days)"), "{warning}");
}

#[test]
fn render_removes_what_the_inventory_no_longer_asks_for_and_names_retired_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = |args: &[&str]| {
        let o = railproxy(d, args);
        assert!(o.status.success(), "railproxy {args:?}:\n{}", text(&o));
        text(&o)
    };
    ok(&["certs", "ca", "--out", "ca"]);
    ok(&["certs", "issue", "--ca", "ca", "--role", "origin", "--name", "www.example.com", "--out", "site"]);
    let site = "sites:\n  one:\n    listeners:\n      o-1: {address: 10.0.1.1}\n";
    let hosts = "    hosts: {www.example.com: {backends: [10.0.2.1:80]}}\n";
    let https = "https: {listen: ['10.0.0.1:443'], cert: site/www.example.com.pem, key: site/www.example.com.key}";
    let first = format!(
        "ca: ca\nedges:\n  edge-1: {{address: 10.0.0.1, hosts: [www.example.com], {https}}}\n  \
         edge-2: {{address: 10.0.0.2, hosts: [www.example.com]}}\n{site}      o-2: {{address: 10.0.1.2}}\n{hosts}"
    );
    std::fs::write(d.join("fleet.yaml"), first).unwrap();
    let t = ok(&["fleet", "render", "-f", "fleet.yaml", "-o", "out"]);
    assert!(!t.contains("removed") && !t.contains("warning"), "{t}");
    let out = d.join("out");
    assert!(out.join("edge-1/https/key.pem").exists() && out.join("o-2/origin.yaml").exists());

    // edge-1 loses HTTPS, edge-2 is retired, and o-2 turns from an origin listener into an edge.
    let second = format!(
        "ca: ca\nedges:\n  edge-1: {{address: 10.0.0.1, hosts: [www.example.com]}}\n  \
         o-2: {{address: 10.0.1.2, hosts: [www.example.com]}}\n{site}{hosts}"
    );
    std::fs::write(d.join("fleet.yaml"), second).unwrap();
    let t = ok(&["fleet", "render", "-f", "fleet.yaml", "-o", "out"]);
    println!("{t}");
    assert!(t.contains("removed out/edge-1/https: the inventory gives edge-1 no HTTPS"), "{t}");
    assert!(!out.join("edge-1/https").exists());
    for f in ["origin.yaml", "railproxy-origin.service"] {
        assert!(t.contains(&format!("removed out/o-2/{f}: o-2 is an edge now")), "{t}");
        assert!(!out.join("o-2").join(f).exists());
    }
    assert!(out.join("o-2/edge.yaml").exists() && out.join("o-2/railproxy-edge.service").exists());
    assert!(t.contains("renewed out/o-2/tls/o-2.pem: not a client (edge) certificate"), "{t}");
    assert!(t.contains("warning: out/edge-2 is a host no longer in the inventory"), "{t}");
    assert!(out.join("edge-2/tls/edge-2.key").exists(), "a retired host's folder is the operator's to remove");
    // Nothing else is taken for a retired host.
    assert_eq!(t.matches("warning:").count(), 1, "{t}");
}

#[test]
fn an_invalid_inventory_fails_with_every_problem_listed() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = "ca: no-such-ca
defaults:
  edge: {tunnel: {cert: /etc/other.pem}}
edges:
  edge-1: {address: 10.0.0.1, hosts: [www.example.com, typo.example.com], https: {cert: no-such.pem, key: no-such.key}}
  Edge_2: {address: 10.0.0.2, hosts: [www.example.com]}
sites:
  one:
    listeners:
      o-1: {address: 10.0.1.1}
      o-2: {address: 10.0.1.2, tunnel: 10.0.1.1:2408}
    hosts: {www.example.com: {backends: [10.0.2.1:80]}}
  two:
    listeners:
      o-1: {address: 10.0.1.3}
    hosts: {www.example.com: {backends: [10.0.2.2:80]}, api.example.com: {}}
    colour: blue
  lonely:
    listeners: {o-9: {address: 10.0.1.9}}
    hosts: {lonely.example.com: {backends: [10.0.2.9:80]}}
  both:
    listeners: {o-5: {address: 10.0.1.5}}
    origins: {o-6: {address: 10.0.1.6}}
    hosts: {both.example.com: {backends: [10.0.2.5:80]}}
  Lab.Site:
    origins: {o-7: {address: 10.0.1.7, admin: 10.0.1.5:9102}}
    hosts: {lab.example.com: {backends: [10.0.2.7:80]}}
";
    std::fs::write(dir.path().join("fleet.yaml"), fleet).unwrap();
    let o = railproxy(dir.path(), &["fleet", "render", "-f", "fleet.yaml", "-o", "out"]);
    let t = text(&o);
    println!("{t}");
    assert_eq!(o.status.code(), Some(64), "{t}");
    for expected in [
        "ca: no fleet CA in",
        "railproxy certs ca --out",
        "edges.edge-1.hosts[1]: unknown host \"typo.example.com\"",
        "edges.Edge_2: not usable as a host name",
        "sites.one.listeners.o-2.tunnel: duplicate listener: 10.0.1.1:2408 is also sites.one.listeners.o-1.tunnel",
        "sites.two.listeners.o-1: duplicate host name",
        "sites.two.hosts.www.example.com: also served by site one",
        "sites.two.hosts.api.example.com.backends: required",
        "sites.two.colour: unknown key",
        "sites.lonely: no edge serves any of its hosts",
        "edges.edge-1.https.listen: required",
        "edges.edge-1.https.cert: cannot read",
        "edges.edge-1.https.key: cannot read",
        "sites.both.origins: a site's origins listen (listeners:) or dial out (origins:), not both",
        "sites.Lab.Site: a dial-out site's name is its tunnel's: one DNS label",
        "sites.Lab.Site.origins.o-7.admin: duplicate listener: 10.0.1.5:9102 is also sites.both.listeners.o-5.admin",
    ] {
        assert!(t.contains(expected), "missing {expected:?} in:\n{t}");
    }
    assert!(!dir.path().join("out").exists(), "nothing is written for an invalid inventory");

    // With a CA and the rest fixed, settings that would override the inventory's are refused.
    assert!(railproxy(dir.path(), &["certs", "ca", "--out", "ca"]).status.success());
    let fleet = "ca: ca
defaults:
  edge: {tunnel: {cert: /etc/other.pem}, delta: {store_size: 64M}}
edges:
  edge-1: {address: 10.0.0.1, hosts: [www.example.com], config: {listen: ['10.0.0.1:81'], https: {listen: ['0.0.0.0:443']}}}
sites:
  one:
    listeners: {o-1: {address: 10.0.1.1}}
    hosts: {www.example.com: {backends: [10.0.2.1:80]}}
";
    std::fs::write(dir.path().join("fleet.yaml"), fleet).unwrap();
    let o = railproxy(dir.path(), &["fleet", "render", "-f", "fleet.yaml", "-o", "out"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(64), "{t}");
    assert!(t.contains("defaults.edge.tunnel.cert: set by the inventory"), "{t}");
    assert!(t.contains("edges.edge-1.config.listen: set by the inventory"), "{t}");
    assert!(t.contains("edges.edge-1.config.https: give HTTPS as edges.edge-1.https (listen, cert, key)"), "{t}");
    assert!(!t.contains("store_size"), "{t}");
    // A rendered config that does not check (a bad value passed through defaults) fails too.
    std::fs::write(
        dir.path().join("fleet.yaml"),
        fleet
            .replace("tunnel: {cert: /etc/other.pem}, ", "")
            .replace(", config: {listen: ['10.0.0.1:81'], https: {listen: ['0.0.0.0:443']}}", "")
            .replace("64M", "lots"),
    )
    .unwrap();
    let o = railproxy(dir.path(), &["fleet", "render", "-f", "fleet.yaml", "-o", "out"]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(text(&o).contains("edge-1/edge.yaml") && text(&o).contains("delta.store_size"), "{}", text(&o));
}

/// Processes started by a unit's commands: daemons, found through their pid files. When the test
/// ends, however it ends, every process whose command line names `root` is stopped, so a daemon
/// whose pid file was never read does not outlive the test.
struct Daemons {
    pids: Vec<u32>,
    root: PathBuf,
}

impl Daemons {
    fn track(&mut self, pid_file: &Path) -> u32 {
        let pid = pid_of(pid_file);
        self.pids.push(pid);
        pid
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        let root = self.root.display().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else { return };
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&root) {
                let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            }
        }
    }
}

/// Waits until the edge at `admin` holds a dial-out lane; how many it holds then.
async fn until_lanes(admin: std::net::SocketAddr) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lanes = Metrics::scrape(admin).await.sum("railproxy_dialout_lanes", &[]);
        if lanes > 0.0 {
            return lanes;
        }
        assert!(Instant::now() < deadline, "no dial-out lane reached the rendered edge in 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pid_of(pid_file: &Path) -> u32 {
    let text = std::fs::read_to_string(pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
    text.trim().parse().unwrap_or_else(|_| panic!("{}: {text:?}", pid_file.display()))
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

/// The commands of `key` (ExecStartPre, ExecStart, ExecReload) in an installed unit, with paths
/// that exist under `root` moved there and `$MAINPID` filled in.
fn unit_commands(unit: &str, key: &str, root: &Path, main_pid: Option<u32>) -> Vec<Vec<String>> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|cmd| {
            cmd.split_whitespace()
                .map(|arg| match arg {
                    "$MAINPID" => main_pid.expect("a main pid").to_string(),
                    a if a.starts_with('/') && root.join(&a[1..]).exists() => root.join(&a[1..]).display().to_string(),
                    a => a.to_string(),
                })
                .collect()
        })
        .collect()
}

/// Runs each command as systemd would, in order, stopping at the first failure. Output goes to
/// `log` (the journal's part): a daemon keeps it open, so it cannot be a pipe waited on.
fn run_unit(unit: &str, key: &str, root: &Path, main_pid: Option<u32>, log: &Path) {
    for cmd in unit_commands(unit, key, root, main_pid) {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let status = Command::new(&cmd[0])
            .args(&cmd[1..])
            .env("RAILPROXY_LOG", "info,access=off")
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "{key}: {cmd:?} failed ({status}):\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

async fn wait_admin(admin: std::net::SocketAddr, what: &str) {
    let mut http = Http::h1();
    http.timeout = Duration::from_secs(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(http.get(&format!("http://{admin}/health"), &[]).await, Ok(r) if r.status == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} not ready on {admin}");
}

fn ansible_playbook(dir: &Path, out: &Path, root: &Path, run: usize) -> String {
    let mut cmd = Command::new("ansible-playbook");
    cmd.args(["-c", "local", "-i"])
        .arg(out.join("inventory.ini"))
        .arg(repo().join("deploy/ansible/playbook.yml"))
        .arg("-e")
        .arg(format!("railproxy_render_dir={}", out.display()))
        .arg("-e")
        .arg(format!("railproxy_binary_src={}", bin("railproxy").display()))
        .arg("-e")
        .arg(format!("railproxy_root={}/{{{{ inventory_hostname }}}}", root.display()))
        .args(["-e", "railproxy_systemd=false"])
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_HOME", dir.join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", dir.join("ansible-tmp"))
        .env("ANSIBLE_PYTHON_INTERPRETER", "auto_silent");
    let name = format!("ansible{run}");
    let mut proc = Proc::spawn(&name, cmd, dir, false);
    let status = proc.wait_exit(Duration::from_secs(300));
    let log = proc.log();
    assert!(status.is_some_and(|s| s.success()), "ansible-playbook failed ({status:?}):\n{log}");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playbook_installs_a_fleet_that_serves_and_upgrades_without_systemd() {
    assert!(
        Command::new("ansible-playbook").arg("--version").output().is_ok_and(|o| o.status.success()),
        "ansible-playbook is missing: `make test` installs it (Debian package ansible-core)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let backend = Backend::start(d, "backend", None);
    let (edge_addr, edge_admin, edge_https) = (free_port(), free_port(), free_port());
    let (tunnel, origin_admin) = (free_port(), free_port());
    let (connector, dialer_admin) = (free_port(), free_port());
    std::fs::create_dir(d.join("run")).unwrap();
    let fleet = format!(
        "ca: ca
defaults:
  run_dir: {run}
  edge: {{server: {{threads: 1, grace_period: 1s, graceful_shutdown_timeout: 1s}}}}
  origin: {{server: {{threads: 1, grace_period: 1s, graceful_shutdown_timeout: 1s}}}}
edges:
  edge-1:
    address: 127.0.0.1
    listen: ['127.0.0.1:{edge_addr}']
    admin: '127.0.0.1:{edge_admin}'
    connector: '127.0.0.1:{connector}'
    hosts: [127.0.0.1, lab.example]
    https: {{listen: ['127.0.0.1:{edge_https}'], cert: site/127.0.0.1.pem, key: site/127.0.0.1.key}}
sites:
  local:
    listeners:
      origin-1: {{address: 127.0.0.1, tunnel: '127.0.0.1:{tunnel}', admin: '127.0.0.1:{origin_admin}'}}
    hosts:
      127.0.0.1: {{backends: ['{backend}']}}
  lab:
    origins:
      origin-2: {{address: 127.0.0.1, admin: '127.0.0.1:{dialer_admin}'}}
    hosts:
      lab.example: {{backends: ['{backend}']}}
",
        run = d.join("run").display(),
        backend = backend.addr,
    );
    std::fs::write(d.join("fleet.yaml"), &fleet).unwrap();
    assert!(railproxy(d, &["certs", "ca", "--out", "ca"]).status.success());
    // The site's HTTPS certificate, as a public CA would issue it; here from a CA of its own.
    assert!(railproxy(d, &["certs", "ca", "--out", "site-ca"]).status.success());
    let o = railproxy(
        d,
        &["certs", "issue", "--ca", "site-ca", "--role", "origin", "--name", "127.0.0.1", "--out", "site"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = railproxy(d, &["fleet", "render", "-f", "fleet.yaml", "-o", "out"]);
    assert!(o.status.success(), "{}", text(&o));

    let (out, root) = (d.join("out"), d.join("root"));
    let first = ansible_playbook(d, &out, &root, 1);
    for task in ["railproxy check (before any reload)", "systemd-analyze verify the unit"] {
        let sections: Vec<&str> = first.split("TASK [").filter(|t| t.contains(task)).collect();
        // Origins go one at a time, edges after them: every host runs the task, none skips it.
        let ran = ["origin-1", "origin-2", "edge-1"]
            .iter()
            .all(|h| sections.iter().any(|t| t.contains(&format!("ok: [{h}]"))))
            && sections.iter().all(|t| !t.contains("skipping"));
        let here = task.starts_with("railproxy") || Command::new("systemd-analyze").arg("--version").output().is_ok();
        assert!(!here || ran, "task {task:?} did not run on every host:\n{first}");
    }
    println!("installed tree:\n  {}", tree(&root).join("\n  "));
    for (host, mode, key) in [
        ("edge-1", "edge", "edge-1"),
        ("edge-1", "edge", "connector.railproxy.internal"),
        ("origin-1", "origin", "origin-1"),
        ("origin-2", "origin", "tunnel-lab"),
    ] {
        let r = root.join(host);
        for f in [
            "usr/local/bin/railproxy".to_string(),
            format!("etc/railproxy/{mode}.yaml"),
            format!("etc/railproxy/tls/{key}.key"),
            format!("etc/systemd/system/railproxy-{mode}.service"),
        ] {
            assert!(r.join(&f).exists(), "{host}: {f} not installed");
        }
    }
    for (f, source) in [("https/cert.pem", "site/127.0.0.1.pem"), ("https/key.pem", "site/127.0.0.1.key")] {
        let installed =
            std::fs::read(root.join("edge-1/etc/railproxy").join(f)).expect("the edge's HTTPS files installed");
        assert!(installed == std::fs::read(d.join(source)).unwrap(), "{f} is not a copy of {source}");
    }
    assert!(!root.join("origin-1/etc/railproxy/https").exists(), "an origin got HTTPS files");
    // A second run changes nothing.
    let second = ansible_playbook(d, &out, &root, 2);
    let recap = second.split("PLAY RECAP").nth(1).unwrap_or_default().to_string();
    assert!(recap.contains("changed=0") && !recap.contains("changed=1"), "second run changed something:\n{second}");

    // Start as systemd would: ExecStartPre (check), ExecStart (daemon), main pid from PIDFile.
    let mut daemons = Daemons { pids: Vec::new(), root: root.clone() };
    let units: Vec<(String, PathBuf, PathBuf, std::net::SocketAddr)> =
        [("origin-1", "origin", origin_admin), ("edge-1", "edge", edge_admin), ("origin-2", "origin", dialer_admin)]
            .into_iter()
            .map(|(host, mode, admin)| {
                let r = root.join(host);
                let unit =
                    std::fs::read_to_string(r.join(format!("etc/systemd/system/railproxy-{mode}.service"))).unwrap();
                let pid_file = PathBuf::from(unit.lines().find_map(|l| l.strip_prefix("PIDFile=")).expect("PIDFile"));
                (unit, r, pid_file, std::net::SocketAddr::from(([127, 0, 0, 1], admin)))
            })
            .collect();
    for (unit, r, pid_file, admin) in &units {
        let log = d.join(format!("{}.log", pid_file.file_stem().unwrap().to_string_lossy()));
        run_unit(unit, "ExecStartPre", r, None, &log);
        run_unit(unit, "ExecStart", r, None, &log);
        daemons.track(pid_file);
        wait_admin(*admin, &pid_file.display().to_string()).await;
    }

    let versions = &testing::generated_sets()[0].versions;
    let url = format!("http://127.0.0.1:{edge_addr}/pages/generated-10k");
    let http = Http::h1();
    let fetch = |v: usize| {
        let (http, url) = (&http, &url);
        async move {
            let r = http.get(url, &[("x-version", &v.to_string())]).await.expect("response through the fleet");
            assert_eq!(r.status, 200);
            assert!(r.body == versions[v], "version {v}: {} bytes differ from the backend's", r.body.len());
        }
    };
    // Over HTTPS too, HTTP/1.1 and h2 by ALPN, trusting the site's CA.
    let https = std::net::SocketAddr::from(([127, 0, 0, 1], edge_https));
    let site_ca = d.join("site-ca/ca.pem");
    let fetch_https = |v: usize| {
        let (site_ca, path) = (&site_ca, "/pages/generated-10k");
        async move {
            for h2 in [false, true] {
                let (alpn, r) =
                    https_get(https, site_ca, "127.0.0.1", h2, ("127.0.0.1", path), &[("x-version", &v.to_string())])
                        .await
                        .unwrap_or_else(|e| panic!("version {v} over HTTPS (h2 offered: {h2}): {e}"));
                assert_eq!((alpn.as_str(), r.status.as_u16()), (if h2 { "h2" } else { "http/1.1" }, 200));
                assert!(
                    r.body == versions[v],
                    "version {v} over {alpn}: {} bytes differ from the backend's",
                    r.body.len()
                );
            }
        }
    };
    for v in 0..4 {
        fetch(v).await;
        fetch_https(v).await;
    }
    // The dial-out site's host, through the lanes its origin dialled to the edge.
    let lanes = until_lanes(std::net::SocketAddr::from(([127, 0, 0, 1], edge_admin))).await;
    let r = http.get(&url, &[("host", "lab.example"), ("x-version", "1")]).await.expect("lab.example through the edge");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.body == versions[1], "lab.example: the page differs from the backend's");
    println!("lab.example served over {lanes} dial-out lanes");
    let edge_metrics = Metrics::settled(std::net::SocketAddr::from(([127, 0, 0, 1], edge_admin))).await;
    assert!(
        edge_metrics.sum("railproxy_delta_wire_bytes_total", &[("encoding", "dcz")]) > 0.0,
        "no delta crossed the rendered tunnel"
    );

    // Roll the edge as `systemctl reload` does: ExecReload (check, SIGQUIT, --upgrade --daemon).
    let (unit, r, pid_file, admin) = &units[1];
    let old = pid_of(pid_file);
    run_unit(unit, "ExecReload", r, Some(old), &d.join("edge.log"));
    let new = daemons.track(pid_file);
    assert_ne!(new, old, "the pid file names the new process");
    wait_admin(*admin, "upgraded edge").await;
    for v in 4..8 {
        fetch(v).await;
        fetch_https(v).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(old) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(old), "the old edge {old} did not exit after handing its sockets over");
    assert!(alive(new));
    let served: HashSet<u32> = daemons.pids.iter().copied().filter(|p| alive(*p)).collect();
    assert_eq!(served.len(), 3, "both origins and the new edge running");

    // The edge loses HTTPS: render removes the rendered files, the role the installed ones.
    let without = fleet.lines().filter(|l| !l.trim_start().starts_with("https:")).collect::<Vec<_>>().join("\n");
    std::fs::write(d.join("fleet.yaml"), without).unwrap();
    let o = railproxy(d, &["fleet", "render", "-f", "fleet.yaml", "-o", "out"]);
    assert!(o.status.success() && text(&o).contains("removed out/edge-1/https"), "{}", text(&o));
    let third = ansible_playbook(d, &out, &root, 3);
    let installed = root.join("edge-1/etc/railproxy");
    assert!(!installed.join("https").exists(), "the edge's HTTPS key stayed installed:\n{third}");
    assert!(!std::fs::read_to_string(installed.join("edge.yaml")).unwrap().contains("https"));
}
