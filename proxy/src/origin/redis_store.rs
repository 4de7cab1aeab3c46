//! The origin's version store on Redis, shared by redundant listeners.
//!
//! Redis is an optimisation, never a dependency: every call is bounded by a timeout, and a miss,
//! an error or a timeout all mean "no base here", so the response goes out in full. Bodies read
//! back are hashed before use, so a stale or damaged entry costs a full response, not a wrong one.
//! `rediss://` speaks TLS through the process's rustls, verified against `store_tls.ca` (or the
//! system roots), with a client certificate when one is configured; the AUTH password is read
//! from its file at start and kept nowhere else.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use delta::store::{StoreStats, VersionStore};
use delta::{Version, VersionId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, IntoConnectionInfo as _};

use crate::config::origin::RedisSettings;
use crate::metrics;

/// Seconds between attempts to connect while Redis is unreachable.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// After this many failed calls in a row, Redis is left alone for `BREAK_FOR`: a Redis that
/// hangs would otherwise add the full timeout to every request.
const BREAK_AFTER: u32 = 3;
const BREAK_FOR: Duration = Duration::from_secs(1);

pub struct RedisStore {
    client: redis::Client,
    url: String,
    /// Shared with the background task that connects.
    conn: Arc<Mutex<Option<ConnectionManager>>>,
    connecting: Mutex<Option<Instant>>,
    ttl: u64,
    timeout: Duration,
    /// Consecutive failed calls, and until when calls are skipped.
    failures: std::sync::atomic::AtomicU32,
    broken_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("url", &self.url).field("timeout", &self.timeout).finish()
    }
}

fn key(id: &VersionId) -> String {
    format!("railproxy:v:{}", id.to_hex())
}

fn count(op: &str, result: &str) {
    metrics::STORE_OPERATIONS.with_label_values(&[op, result]).inc();
}

impl RedisStore {
    /// A store as `settings` say, whose values expire `ttl` after they were written; the
    /// connection is made in the background.
    pub fn new(settings: &RedisSettings, ttl: Duration) -> anyhow::Result<Self> {
        let url = &settings.url;
        let mut info = url.as_str().into_connection_info().with_context(|| format!("delta.store {url:?}"))?;
        let mut auth = info.redis_settings().clone();
        if let Some(user) = &settings.user {
            auth = auth.set_username(user);
        }
        if let Some(file) = &settings.password_file {
            let password = std::fs::read_to_string(file)
                .with_context(|| format!("delta.store_password_file: reading {}", file.display()))?;
            // A file written with `echo` ends in a newline, which is no part of the password.
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "delta.store_password_file: {} is empty", file.display());
            auth = auth.set_password(password);
        }
        info = info.set_redis_settings(auth);
        let client = match url.starts_with("rediss://") {
            true => {
                let read = |key: &str, p: &Option<std::path::PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
                    p.as_ref()
                        .map(|p| std::fs::read(p).with_context(|| format!("delta.store_tls.{key}: {}", p.display())))
                        .transpose()
                };
                let client_tls = match (read("cert", &settings.cert)?, read("key", &settings.key)?) {
                    (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig { client_cert, client_key }),
                    _ => None,
                };
                let certs = redis::TlsCertificates { client_tls, root_cert: read("ca", &settings.ca)? };
                redis::Client::build_with_tls(info, certs).with_context(|| format!("delta.store {url:?}"))?
            }
            false => redis::Client::open(info).with_context(|| format!("delta.store {url:?}"))?,
        };
        Ok(RedisStore {
            client,
            url: url.to_string(),
            conn: Arc::new(Mutex::new(None)),
            connecting: Mutex::new(None),
            ttl: ttl.as_secs().max(1),
            timeout: settings.timeout,
            failures: std::sync::atomic::AtomicU32::new(0),
            broken_until: Mutex::new(None),
        })
    }

    fn succeeded(&self) {
        self.failures.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    fn failed(&self) {
        let n = self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if n >= BREAK_AFTER {
            self.failures.store(0, std::sync::atomic::Ordering::Relaxed);
            *self.broken_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + BREAK_FOR);
            log::warn!("version store {}: {n} failed calls in a row, skipping it for {BREAK_FOR:?}", self.url);
        }
    }

    fn broken(&self) -> bool {
        self.broken_until.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| Instant::now() < t)
    }

    /// The connection if there is one; otherwise starts connecting (at most once a second) and
    /// returns None at once, without waiting.
    fn connection(&self) -> Option<ConnectionManager> {
        if self.broken() {
            return None;
        }
        if let Some(c) = self.conn.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Some(c.clone());
        }
        let mut last = self.connecting.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
            return None;
        }
        *last = Some(Instant::now());
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let client = self.client.clone();
        let slot = self.conn.clone();
        let url = self.url.clone();
        tokio::spawn(async move {
            match ConnectionManager::new_with_config(client, config).await {
                Ok(c) => {
                    log::info!("version store: connected to {url}");
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
                }
                Err(e) => {
                    count("connect", "error");
                    log::warn!("version store: cannot connect to {url}: {e}; responses go out in full meanwhile");
                }
            }
        });
        None
    }
}

#[async_trait]
impl VersionStore<VersionId> for RedisStore {
    async fn get(&self, id: &VersionId) -> Option<Version> {
        let Some(mut conn) = self.connection() else {
            count("get", "unavailable");
            return None;
        };
        match tokio::time::timeout(self.timeout, conn.get::<_, Option<Vec<u8>>>(key(id))).await {
            Ok(Ok(Some(body))) => {
                self.succeeded();
                let v = Version::new(body);
                if v.id == *id {
                    count("get", "hit");
                    Some(v)
                } else {
                    count("get", "corrupt");
                    None
                }
            }
            Ok(Ok(None)) => {
                self.succeeded();
                count("get", "miss");
                None
            }
            Ok(Err(e)) => {
                self.failed();
                count("get", "error");
                log::debug!("version store get: {e}");
                None
            }
            Err(_) => {
                self.failed();
                count("get", "timeout");
                None
            }
        }
    }

    fn put(&self, id: VersionId, version: Version) {
        let Some(mut conn) = self.connection() else {
            count("put", "unavailable");
            return;
        };
        let (ttl, timeout) = (self.ttl, self.timeout);
        tokio::spawn(async move {
            let result =
                tokio::time::timeout(timeout, conn.set_ex::<_, _, ()>(key(&id), version.body.as_ref(), ttl)).await;
            count(
                "put",
                match result {
                    Ok(Ok(())) => "ok",
                    Ok(Err(_)) => "error",
                    Err(_) => "timeout",
                },
            );
        });
    }

    fn remove(&self, id: &VersionId) {
        let Some(mut conn) = self.connection() else { return };
        let (k, timeout) = (key(id), self.timeout);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(timeout, conn.del::<_, ()>(k)).await;
        });
    }

    fn stats(&self) -> StoreStats {
        // Redis holds the figures; `railproxy_store_operations_total` says how calls went.
        StoreStats::default()
    }
}
