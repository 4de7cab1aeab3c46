//! A DNS server on loopback (UDP) whose answers a test sets and changes: A records with a TTL,
//! NXDOMAIN for names it does not know, no records for other types. Enough for a resolver to
//! find, lose and find again the addresses of a backend.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

type Answers = Arc<Mutex<HashMap<String, (Vec<Ipv4Addr>, u32)>>>;

pub struct Dns {
    pub addr: SocketAddr,
    answers: Answers,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").field("addr", &self.addr).finish()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The name a query asks for, lower case without the final dot, its type, and where the
/// question ends.
fn question(q: &[u8]) -> Option<(String, u16, usize)> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let n = *q.get(i)? as usize;
        i += 1;
        if n == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + n)?).to_ascii_lowercase());
        i += n;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    Some((labels.join("."), qtype, i + 4))
}

fn answer(q: &[u8], answers: &Answers) -> Option<Vec<u8>> {
    let (name, qtype, end) = question(q)?;
    let known = answers.lock().unwrap().get(&name).cloned();
    let mut r = q[..end].to_vec();
    r[2] = 0x84 | (q[2] & 0x01); // a response, authoritative, recursion desired as asked
    r[3] = 0x80; // recursion available, no error
    r[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    match known {
        None => r[3] |= 3, // NXDOMAIN
        Some((ips, ttl)) if qtype == 1 => {
            r[7] = ips.len() as u8;
            for ip in ips {
                r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
                r.extend_from_slice(&ttl.to_be_bytes());
                r.extend_from_slice(&[0, 4]);
                r.extend_from_slice(&ip.octets());
            }
        }
        Some(_) => {}
    }
    Some(r)
}

impl Dns {
    pub async fn start() -> Dns {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind the DNS server");
        let addr = socket.local_addr().expect("address");
        let answers: Answers = Arc::default();
        let queries = Arc::new(AtomicUsize::new(0));
        let (a, n) = (answers.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else { continue };
                n.fetch_add(1, Ordering::Relaxed);
                if let Some(r) = answer(&buf[..len], &a) {
                    let _ = socket.send_to(&r, from).await;
                }
            }
        });
        Dns { addr, answers, queries, task }
    }

    /// From now on `name` has these addresses, valid for `ttl` seconds.
    pub fn set(&self, name: &str, ips: &[Ipv4Addr], ttl: u32) {
        self.answers.lock().unwrap().insert(name.to_ascii_lowercase(), (ips.to_vec(), ttl));
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}
