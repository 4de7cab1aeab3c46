//! A packet-level link emulator: this kernel has no netem, so a long, thin, lossy link is made
//! in user space. Two TUN devices, one in this process's network namespace and one in a network
//! namespace made for the link (`Link::ns`), joined by a forwarder in this process that gives
//! each direction a one-way delay, a rate (serialisation at the bottleneck), a tail-drop queue
//! and random loss. Processes started with [`Link::command`] run on the far side; addresses are
//! a /30 of 198.18.0.0/15 (RFC 2544's benchmarking range) that exists only on the two devices,
//! so traffic goes nowhere but across the link.
//!
//! Beside delay, rate and loss, the link can refuse every connection towards the far side
//! (a firewall dropping inbound SYNs) and become a silent black hole for a while.
//!
//! `RAILPROXY_LINK_TRACE=1` logs every packet dropped at the full queue (source, ports, time).
//!
//! It needs root and `/dev/net/tun`; [`Link::start`] says why not otherwise, for tests to skip.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::Notify;
use tokio::time::Instant;
use tun_rs::{AsyncDevice, DeviceBuilder};

/// One direction's behaviour (both directions get the same).
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub one_way_delay: Duration,
    /// Bottleneck rate, bits per second.
    pub rate_bps: u64,
    /// Bytes the bottleneck queue holds before it drops arriving packets.
    pub queue_bytes: usize,
    /// Share of packets lost at random, 0.0 to 1.0.
    pub loss: f64,
}

impl Profile {
    /// `rtt` round trip, `mbit` Mbit/s, `loss` in percent; a queue of one bandwidth-delay
    /// product (at least 64 KB).
    pub fn new(rtt: Duration, mbit: f64, loss_percent: f64) -> Self {
        let rate_bps = (mbit * 1e6) as u64;
        let bdp = (rate_bps as f64 / 8.0 * rtt.as_secs_f64()) as usize;
        Profile { one_way_delay: rtt / 2, rate_bps, queue_bytes: bdp.max(64 * 1024), loss: loss_percent / 100.0 }
    }
}

/// Packets the forwarder dropped, by cause, and the bytes it carried.
#[derive(Debug, Default)]
pub struct Drops {
    pub queue: AtomicU64,
    pub loss: AtomicU64,
    /// IP bytes (headers, TCP and TLS included) of every packet that entered the link, both
    /// directions, lost ones too: what a path puts on the wire.
    pub carried: AtomicU64,
    /// The part of `carried` the far side sent (responses, when origins are there): each
    /// direction has its own bottleneck, so the busier one bounds a path's rate.
    pub carried_from_far: AtomicU64,
    /// Packets dropped by [`Link::refuse_inbound`] and [`Link::black_hole`].
    pub filtered: AtomicU64,
}

/// What the link drops on purpose, beside its queue and random loss.
#[derive(Debug, Default)]
struct Rules {
    /// TCP SYNs towards the far side: nothing there can be connected to, as behind a firewall
    /// that drops every inbound packet; connections the far side opens work.
    refuse_inbound: AtomicBool,
    /// Every packet, both ways, with no RST or ICMP: a silent black hole on the path.
    black_hole: AtomicBool,
}

impl Rules {
    fn drops(&self, packet: &[u8], from_far: bool) -> bool {
        if self.black_hole.load(Ordering::Relaxed) {
            return true;
        }
        !from_far && self.refuse_inbound.load(Ordering::Relaxed) && opens_a_connection(packet)
    }
}

/// An IPv4 TCP segment with SYN and without ACK: the first packet of a connection.
fn opens_a_connection(packet: &[u8]) -> bool {
    const TCP: u8 = 6;
    if packet.len() < 20 || packet[0] >> 4 != 4 || packet[9] != TCP {
        return false;
    }
    let header = usize::from(packet[0] & 0x0f) * 4;
    let Some(&flags) = packet.get(header + 13) else { return false };
    let (syn, ack) = (flags & 0x02 != 0, flags & 0x10 != 0);
    syn && !ack
}

/// A running link; dropping it stops the forwarder and removes the namespace (with the
/// processes' sockets in it, which callers stop first).
#[derive(Debug)]
pub struct Link {
    /// The far side's namespace.
    pub ns: String,
    /// This side's address, and the far side's.
    pub near: Ipv4Addr,
    pub far: Ipv4Addr,
    pub drops: Arc<Drops>,
    rules: Arc<Rules>,
    /// The TUN devices: this side's, and the far side's (in `ns`).
    devices: (String, String),
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

static LINKS: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Link {
    /// Makes the namespace and devices and starts forwarding; `Err` says why it cannot here.
    pub async fn start(profile: Profile) -> Result<Link, String> {
        if !std::path::Path::new("/dev/net/tun").exists() {
            return Err("no /dev/net/tun".into());
        }
        let n = LINKS.fetch_add(1, Ordering::Relaxed);
        let id = std::process::id() % 10_000;
        let ns = format!("railproxy-link-{id}-{n}");
        // A /30 per link, so that links of parallel tests do not overlap.
        let block = (id * 64 + n) % 32_768;
        let (hi, lo) = ((block / 64) as u8, ((block % 64) * 4) as u8);
        let near = Ipv4Addr::new(198, 18 + hi / 128, hi % 128, lo + 1);
        let far = Ipv4Addr::new(198, 18 + hi / 128, hi % 128, lo + 2);
        let (near_dev, far_dev) = (format!("rpl{id}n{n}"), format!("rpl{id}f{n}"));
        ip(&["netns", "add", &ns]).map_err(|e| format!("cannot make a network namespace ({e}); run as root"))?;
        let devices = (near_dev.clone(), far_dev.clone());
        let mut link = Link {
            ns: ns.clone(),
            near,
            far,
            drops: Arc::default(),
            rules: Arc::default(),
            devices,
            tasks: Vec::new(),
        };
        let build = |name: &str| {
            DeviceBuilder::new().name(name).mtu(1500).build_async().map_err(|e| format!("TUN device {name}: {e}"))
        };
        let (a, b) = (build(&near_dev)?, build(&far_dev)?);
        ip(&["link", "set", &far_dev, "netns", &ns])?;
        ip(&["addr", "add", &format!("{near}/30"), "dev", &near_dev])?;
        ip(&["link", "set", &near_dev, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{far}/30"), "dev", &far_dev])?;
        ip(&["-n", &ns, "link", "set", &far_dev, "up"])?;
        let (a, b) = (Arc::new(a), Arc::new(b));
        link.tasks.extend(direction(a.clone(), b.clone(), profile, link.drops.clone(), link.rules.clone(), false));
        link.tasks.extend(direction(b, a, profile, link.drops.clone(), link.rules.clone(), true));
        Ok(link)
    }

    /// Drops every TCP SYN towards the far side from now on (`false`: no more): processes
    /// there can connect out, nothing can connect in.
    pub fn refuse_inbound(&self, on: bool) {
        self.rules.refuse_inbound.store(on, Ordering::Relaxed);
    }

    /// Drops every packet both ways from now on (`false`: carries them again), silently.
    pub fn black_hole(&self, on: bool) {
        self.rules.black_hole.store(on, Ordering::Relaxed);
    }

    /// `program args…` run on the far side of the link.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }

    /// Makes every TCP connection across the link, on both sides and whatever process opens or
    /// accepts it, use `algorithm`: the route's `congctl`, which overrides the host's default
    /// (a sysctl that a network namespace may not be allowed to change).
    pub fn congestion_control(&self, algorithm: &str) -> Result<(), String> {
        let [a, b, c, d] = self.near.octets();
        let net = format!("{}/30", Ipv4Addr::new(a, b, c, d - 1));
        let (near, far) = (self.near.to_string(), self.far.to_string());
        let route = |dev: &str, src: &str| {
            ["route", "replace", &net, "dev", dev, "proto", "kernel", "scope", "link", "src", src, "congctl", algorithm]
                .map(String::from)
        };
        let near_route = route(&self.devices.0, &near);
        ip(&near_route.each_ref().map(String::as_str))?;
        let far_route = [["-n".to_string(), self.ns.clone()].as_slice(), &route(&self.devices.1, &far)].concat();
        ip(&far_route.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

/// A packet on its way: when it leaves the far end of the link.
struct InFlight {
    at: Instant,
    packet: Vec<u8>,
}

/// One direction: packets read from `from` wait their turn at the bottleneck (rate), then
/// travel (delay), then are written to `to`. Arrivals that would wait behind more than
/// `queue_bytes` are dropped, as a router's full queue drops them.
fn direction(
    from: Arc<AsyncDevice>,
    to: Arc<AsyncDevice>,
    p: Profile,
    drops: Arc<Drops>,
    rules: Arc<Rules>,
    from_far: bool,
) -> [tokio::task::JoinHandle<()>; 2] {
    let line: Arc<std::sync::Mutex<VecDeque<InFlight>>> = Arc::default();
    let ready = Arc::new(Notify::new());
    let reader = {
        let (line, ready) = (line.clone(), ready.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            let trace = std::env::var_os("RAILPROXY_LINK_TRACE").is_some();
            // When the bottleneck finishes sending what it has.
            let mut busy_until = Instant::now();
            loop {
                let Ok(n) = from.recv(&mut buf).await else { return };
                if rules.drops(&buf[..n], from_far) {
                    drops.filtered.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                drops.carried.fetch_add(n as u64, Ordering::Relaxed);
                if from_far {
                    drops.carried_from_far.fetch_add(n as u64, Ordering::Relaxed);
                }
                let now = Instant::now();
                busy_until = busy_until.max(now);
                let queued = (busy_until - now).as_secs_f64() * p.rate_bps as f64 / 8.0;
                if queued as usize + n > p.queue_bytes {
                    if trace {
                        // Where a burst comes from: the dropped packet's source and ports.
                        let port = |at: usize| u16::from_be_bytes([buf[at], buf[at + 1]]);
                        eprintln!(
                            "link: dropped at the full queue ({queued:.0} bytes): {n} bytes, {}.{}.{}.{}:{} → port {}, at {:?}",
                            buf[12],
                            buf[13],
                            buf[14],
                            buf[15],
                            port(20),
                            port(22),
                            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
                        );
                    }
                    drops.queue.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if p.loss > 0.0 && rand::thread_rng().gen_bool(p.loss) {
                    drops.loss.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                busy_until += Duration::from_secs_f64(n as f64 * 8.0 / p.rate_bps as f64);
                let at = busy_until + p.one_way_delay;
                line.lock().unwrap_or_else(|e| e.into_inner()).push_back(InFlight { at, packet: buf[..n].to_vec() });
                ready.notify_one();
            }
        })
    };
    let writer = tokio::spawn(async move {
        loop {
            let next = line.lock().unwrap_or_else(|e| e.into_inner()).front().map(|f| f.at);
            match next {
                None => ready.notified().await,
                Some(at) if at > Instant::now() => tokio::time::sleep_until(at).await,
                Some(_) => {
                    let Some(f) = line.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else { continue };
                    if to.send(&f.packet).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    [reader, writer]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 header of 20 bytes and a TCP header with `flags`.
    fn segment(protocol: u8, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = protocol;
        p[20 + 13] = flags;
        p
    }

    #[test]
    fn only_a_connections_first_segment_is_refused_inbound() {
        let rules = Rules::default();
        rules.refuse_inbound.store(true, Ordering::Relaxed);
        let (syn, syn_ack, ack, udp) = (segment(6, 0x02), segment(6, 0x12), segment(6, 0x10), segment(17, 0x02));
        assert!(rules.drops(&syn, false), "a SYN towards the far side");
        assert!(!rules.drops(&syn, true), "the far side's own SYN goes out");
        assert!(!rules.drops(&syn_ack, false) && !rules.drops(&ack, false), "established traffic");
        assert!(!rules.drops(&udp, false), "not TCP");
        assert!(!rules.drops(&syn[..30], false), "a cut-short segment is not read past its end");
        rules.black_hole.store(true, Ordering::Relaxed);
        assert!(rules.drops(&ack, false) && rules.drops(&ack, true), "a black hole drops everything");
    }
}
