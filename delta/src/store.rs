//! Version stores: where edge and origin keep the bodies deltas are made against.
//!
//! The edge keeps the latest verified body per URL; the origin keeps bodies by version id so
//! that any edge holding any recent version gets a delta. Both are byte-bounded LRUs in memory
//! whose entries expire a while after they were stored; the trait lets a shared store (Redis)
//! stand in for the origin's.

use std::fmt;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::version::Version;

/// Bytes counted per entry beyond its body: key, hash table slot, list links, `Bytes` header.
pub const ENTRY_OVERHEAD: usize = 256;

/// What a store reports for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Bytes held, overhead included.
    pub bytes: u64,
    /// Configured bound.
    pub capacity: u64,
    /// Entries held.
    pub entries: u64,
    /// Entries evicted to make room, since start.
    pub evictions: u64,
    /// Entries dropped because they outlived the store's time to live, since start.
    pub expirations: u64,
}

/// A store of versions under keys of type `K`.
#[async_trait]
pub trait VersionStore<K>: Send + Sync + fmt::Debug {
    /// The version stored under `key`, if any; counts as a use for eviction.
    async fn get(&self, key: &K) -> Option<Version>;
    /// Stores `version` under `key`, replacing what was there. Never blocks on I/O: stores
    /// that need network do it in the background.
    fn put(&self, key: K, version: Version);
    /// Forgets `key` (e.g. after its body failed verification).
    fn remove(&self, key: &K);
    /// Current figures.
    fn stats(&self) -> StoreStats;
}

/// An in-process LRU bounded in bytes, whose entries expire `ttl` after they were stored (a use
/// does not extend it: a version lives on only by being stored again).
pub struct MemoryStore<K: Hash + Eq> {
    inner: Mutex<Inner<K>>,
    capacity: u64,
    ttl: Duration,
}

struct Inner<K: Hash + Eq> {
    lru: lru::LruCache<K, Entry>,
    bytes: u64,
    evictions: u64,
    expirations: u64,
}

struct Entry {
    version: Version,
    stored: Instant,
}

fn weight(v: &Version) -> u64 {
    (v.body.len() + ENTRY_OVERHEAD) as u64
}

/// What [`MemoryStore::new`] keeps entries for: long enough never to matter.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl<K: Hash + Eq> MemoryStore<K> {
    /// A store holding at most `capacity` bytes (bodies plus [`ENTRY_OVERHEAD`] each), whose
    /// entries do not expire.
    pub fn new(capacity: u64) -> Self {
        Self::with_ttl(capacity, FOREVER)
    }

    /// As [`new`](Self::new), each entry dropped `ttl` after it was stored.
    pub fn with_ttl(capacity: u64, ttl: Duration) -> Self {
        let inner = Inner { lru: lru::LruCache::unbounded(), bytes: 0, evictions: 0, expirations: 0 };
        MemoryStore { inner: Mutex::new(inner), capacity, ttl }
    }

    fn expired(&self, e: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(e.stored) >= self.ttl
    }

    /// Drops every entry that outlived the time to live; returns how many. Lookups never return
    /// such an entry anyway: this frees its memory, and makes the figures true, without waiting
    /// for a lookup of that key.
    pub fn expire(&self) -> usize {
        let now = Instant::now();
        let mut inner = self.lock();
        let (mut gone, mut freed) = (0, 0);
        inner.lru.retain(|_, e| {
            let keep = !self.expired(e, now);
            if !keep {
                gone += 1;
                freed += weight(&e.version);
            }
            keep
        });
        inner.bytes -= freed;
        inner.expirations += gone as u64;
        gone
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        // A panic while holding the lock cannot leave the LRU inconsistent in a way that matters
        // more than losing the store; keep serving.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The version under `key` without waiting (the in-memory store never does).
    pub fn get_now(&self, key: &K) -> Option<Version> {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.lru.get(key) {
            Some(e) if self.expired(e, now) => {
                if let Some(e) = inner.lru.pop(key) {
                    inner.bytes -= weight(&e.version);
                    inner.expirations += 1;
                }
                None
            }
            Some(e) => Some(e.version.clone()),
            None => None,
        }
    }

    /// Fault injection for tests: flips a byte in the middle of every stored body while keeping
    /// its version id, as memory corruption would. Never called outside tests.
    pub fn corrupt_bodies_for_testing(&self) -> usize {
        let mut inner = self.lock();
        let mut n = 0;
        for (_, Entry { version: v, .. }) in inner.lru.iter_mut() {
            if !v.body.is_empty() {
                let mut body = v.body.to_vec();
                let mid = body.len() / 2;
                body[mid] ^= 0x01;
                v.body = body.into();
                n += 1;
            }
        }
        n
    }
}

#[async_trait]
impl<K> VersionStore<K> for MemoryStore<K>
where
    K: Hash + Eq + Send + Sync + fmt::Debug,
{
    async fn get(&self, key: &K) -> Option<Version> {
        self.get_now(key)
    }

    fn put(&self, key: K, version: Version) {
        let w = weight(&version);
        if w > self.capacity {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.lru.put(key, Entry { version, stored: Instant::now() }) {
            inner.bytes -= weight(&old.version);
        }
        inner.bytes += w;
        while inner.bytes > self.capacity {
            match inner.lru.pop_lru() {
                Some((_, evicted)) => {
                    inner.bytes -= weight(&evicted.version);
                    inner.evictions += 1;
                }
                None => break,
            }
        }
    }

    fn remove(&self, key: &K) {
        let mut inner = self.lock();
        if let Some(old) = inner.lru.pop(key) {
            inner.bytes -= weight(&old.version);
        }
    }

    fn stats(&self) -> StoreStats {
        let inner = self.lock();
        StoreStats {
            bytes: inner.bytes,
            capacity: self.capacity,
            entries: inner.lru.len() as u64,
            evictions: inner.evictions,
            expirations: inner.expirations,
        }
    }
}

impl<K: Hash + Eq> fmt::Debug for MemoryStore<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore").field("capacity", &self.capacity).field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: usize, fill: u8) -> Version {
        Version::new(vec![fill; n])
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // The memory store's futures complete on first poll.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("memory store future pending"),
        }
    }

    #[test]
    fn bounded_in_bytes_and_evicts_least_recently_used() {
        let per = (1000 + ENTRY_OVERHEAD) as u64;
        let store = MemoryStore::new(per * 3);
        store.put("a", v(1000, 1));
        store.put("b", v(1000, 2));
        store.put("c", v(1000, 3));
        assert!(block_on(store.get(&"a")).is_some()); // a is now most recent
        store.put("d", v(1000, 4)); // evicts b
        assert!(block_on(store.get(&"b")).is_none());
        for k in ["a", "c", "d"] {
            assert!(block_on(store.get(&k)).is_some(), "{k}");
        }
        let s = store.stats();
        assert_eq!((s.entries, s.bytes, s.evictions, s.capacity), (3, per * 3, 1, per * 3));
    }

    #[test]
    fn replacing_and_removing_keeps_the_byte_count() {
        let store = MemoryStore::new(1 << 20);
        store.put(1u8, v(500, 1));
        store.put(1u8, v(700, 2));
        assert_eq!(store.stats().bytes, (700 + ENTRY_OVERHEAD) as u64);
        assert_eq!(block_on(store.get(&1)).unwrap().body.len(), 700);
        store.remove(&1);
        assert_eq!(store.stats(), StoreStats { capacity: 1 << 20, ..Default::default() });
    }

    #[test]
    fn a_version_larger_than_the_store_is_not_kept() {
        let store = MemoryStore::new(1000);
        store.put("big", v(2000, 1));
        assert_eq!(store.stats().entries, 0);
    }

    #[test]
    fn entries_expire_after_the_ttl_from_when_they_were_stored() {
        let ttl = Duration::from_millis(50);
        let store = MemoryStore::with_ttl(1 << 20, ttl);
        store.put("read", v(100, 1));
        store.put("idle", v(100, 2));
        let start = Instant::now();
        // Reading does not keep an entry alive; storing it again does.
        while start.elapsed() < ttl * 3 / 4 {
            assert!(block_on(store.get(&"read")).is_some());
        }
        store.put("again", v(100, 3));
        std::thread::sleep(ttl - start.elapsed().min(ttl) + Duration::from_millis(5));
        store.put("again", v(100, 3));
        assert!(block_on(store.get(&"read")).is_none(), "read often, but stored longer ago than the ttl");
        assert_eq!(store.expire(), 1, "idle is dropped by the sweep");
        let s = store.stats();
        assert_eq!((s.entries, s.bytes, s.expirations), (1, (100 + ENTRY_OVERHEAD) as u64, 2));
        assert!(block_on(store.get(&"again")).is_some());
    }

    #[test]
    fn corruption_keeps_ids_and_changes_bodies() {
        let store = MemoryStore::new(1 << 20);
        let original = v(100, 7);
        store.put("k", original.clone());
        assert_eq!(store.corrupt_bodies_for_testing(), 1);
        let now = store.get_now(&"k").unwrap();
        assert_eq!(now.id, original.id);
        assert_ne!(now.body, original.body);
    }
}
