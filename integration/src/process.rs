//! Child processes that are always stopped: killed on drop, with their logs kept for failures.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The folder holding the workspace's binaries (target/<profile>), found from the test binary.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("exe dir");
    // Test binaries live in target/<profile>/deps; binaries one level up.
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("profile dir").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} is missing: build the workspace first (make test does)", path.display());
    path
}

/// The repository's root folder.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Runs `railproxy ARGS` in `dir` to completion (commands such as check, certs, fleet).
pub fn railproxy(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("railproxy")).args(args).current_dir(dir).output().expect("run railproxy")
}

/// stdout then stderr of a finished command.
pub fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A command for `program`, pinned to the CPUs in `cpus` (a `taskset -c` list) when given.
pub fn command(program: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(list) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(list).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A running child process.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stderr (and stdout, unless piped by the caller) going to `dir/name.log`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path, pipe_stdout: bool) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        cmd.stderr(file.try_clone().expect("log fd"));
        cmd.stdout(if pipe_stdout { Stdio::piped() } else { Stdio::from(file) });
        cmd.stdin(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc { name: name.to_string(), child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// None while running, the exit status once it ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by name (TERM, QUIT, KILL, HUP).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status();
    }

    /// Waits for the process to end, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.log());
        }
    }
}

/// The test backend, on an ephemeral port.
#[derive(Debug)]
pub struct Backend {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Backend {
    /// Starts a backend; with `corpus`, it also serves every source in that folder.
    pub fn start(dir: &Path, name: &str, corpus: Option<&Path>) -> Backend {
        Backend::start_pinned(dir, name, corpus, None)
    }

    /// As [`Backend::start`], pinned to `cpus`.
    pub fn start_pinned(dir: &Path, name: &str, corpus: Option<&Path>, cpus: Option<&str>) -> Backend {
        Backend::spawn(dir, name, "127.0.0.1:0", corpus, cpus)
    }

    /// A backend on `addr`, for a test that started what stands in front of it first.
    pub fn start_at(dir: &Path, name: &str, addr: SocketAddr) -> Backend {
        Backend::spawn(dir, name, &addr.to_string(), None, None)
    }

    /// A backend run by `cmd` (the test backend's binary behind a wrapper such as
    /// `ip netns exec`), on its side's loopback.
    pub fn start_with(dir: &Path, name: &str, cmd: Command) -> Backend {
        Backend::spawn_with(dir, name, "127.0.0.1:0", None, cmd)
    }

    fn spawn(dir: &Path, name: &str, listen: &str, corpus: Option<&Path>, cpus: Option<&str>) -> Backend {
        Backend::spawn_with(dir, name, listen, corpus, command(&bin("railproxy-testbackend"), cpus))
    }

    fn spawn_with(dir: &Path, name: &str, listen: &str, corpus: Option<&Path>, mut cmd: Command) -> Backend {
        cmd.args(["--listen", listen]);
        if let Some(c) = corpus {
            cmd.arg("--corpus").arg(c);
        }
        let mut proc = Proc::spawn(name, cmd, dir, true);
        let stdout = proc.stdout().expect("piped stdout");
        // The first line says where it listens; a thread bounds the wait.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{name} did not start:\n{}", proc.log()));
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{name} said {line:?}:\n{}", proc.log()));
        Backend { proc, addr }
    }

    /// How many times the backend served `/cache/{key}` (key `secs/name`).
    pub async fn hits(&self, key: &str) -> u64 {
        self.number(&format!("/hits/{key}")).await
    }

    /// Requests the backend has answered so far, this one included.
    pub async fn served(&self) -> u64 {
        self.number("/count").await
    }

    async fn number(&self, path: &str) -> u64 {
        let r = crate::Http::h1().get(&format!("http://{}{path}", self.addr), &[]).await.expect("backend answers");
        String::from_utf8_lossy(&r.body).trim().parse().expect("a number")
    }
}

/// A free loopback port. The port is released before use, so the caller retries on a clash.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A free loopback address ([`free_port`] on 127.0.0.1), with the same caveat.
pub fn free_loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A real redis-server on an ephemeral loopback port, without persistence.
#[derive(Debug)]
pub struct Redis {
    pub proc: Proc,
    pub addr: SocketAddr,
    /// TLS only: the folder of `make_certs` (the server presents origin.pem, clients must
    /// present a certificate from its CA), and the AUTH password.
    tls: Option<(PathBuf, String)>,
}

impl Redis {
    pub fn start(dir: &Path) -> Redis {
        Self::start_with(dir, None)
    }

    /// TLS only (no plain port), a client certificate required, AUTH with `password`. `certs`
    /// holds `make_certs`'s files: the server's is origin.pem (valid for 127.0.0.1).
    pub fn start_tls(dir: &Path, certs: &Path, password: &str) -> Redis {
        Self::start_with(dir, Some(&(certs.to_path_buf(), password.to_string())))
    }

    fn start_with(dir: &Path, tls: Option<&(PathBuf, String)>) -> Redis {
        for attempt in 1..=3 {
            let port = free_port();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
            match tls {
                None => cmd.args(["--port", &port.to_string()]),
                Some((c, password)) => cmd
                    .args(["--port", "0", "--tls-port", &port.to_string(), "--tls-auth-clients", "yes"])
                    .arg("--tls-cert-file")
                    .arg(c.join("origin.pem"))
                    .arg("--tls-key-file")
                    .arg(c.join("origin.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(c.join("ca.pem"))
                    .args(["--requirepass", password]),
            };
            cmd.args(["--dir"]).arg(dir);
            let mut proc = Proc::spawn(&format!("redis{attempt}"), cmd, dir, false);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let redis = |proc| Redis { proc, addr, tls: tls.cloned() };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline && proc.exited().is_none() {
                let up = match tls {
                    None => ping(addr),
                    Some(_) => std::net::TcpStream::connect(addr).is_ok(),
                };
                if up {
                    let r = redis(proc);
                    if tls.is_some() {
                        // The port is open once the server listens; it answers once TLS is up.
                        assert_eq!(r.cli(&["PING"]), "PONG", "redis-server over TLS:\n{}", r.proc.log());
                    }
                    return r;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("redis-server did not start (is it installed? make test installs it)");
    }

    pub fn url(&self) -> String {
        match &self.tls {
            None => format!("redis://{}/0", self.addr),
            Some(_) => format!("rediss://{}/0", self.addr),
        }
    }

    /// A command's answer, by `redis-cli` (with TLS, the edge certificate and the password when
    /// the server wants them).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string(), "--no-auth-warning"]);
        if let Some((c, password)) = &self.tls {
            cmd.arg("--tls").arg("--cacert").arg(c.join("ca.pem"));
            cmd.arg("--cert").arg(c.join("edge.pem")).arg("--key").arg(c.join("edge.key"));
            cmd.args(["-a", password]);
        }
        let out = cmd.args(args).output().expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn ping(addr: SocketAddr) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
