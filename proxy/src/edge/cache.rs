//! The edge cache: pingora-cache in memory, bounded in bytes by its LRU eviction manager, with a
//! cache lock so that concurrent misses for one key make one upstream request. What is cached is
//! the plain body (tunnel bodies are decoded before the cache writes them).

use std::sync::Arc;

use pingora_cache::cache_control::CacheControl;
use pingora_cache::eviction::EvictionManager;
use pingora_cache::eviction::lru::Manager;
use pingora_cache::filters::resp_cacheable;
use pingora_cache::key::HashBinary;
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::predictor::Predictor;
use pingora_cache::{
    CacheKey, CacheMeta, CacheMetaDefaults, CachePhase, MemCache, NoCacheReason, RespCacheable, VarianceBuilder,
};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::config::edge::CacheSettings;
use crate::metrics;

/// Responses without explicit freshness (Cache-Control max-age, s-maxage, Expires) are not cached.
const DEFAULTS: CacheMetaDefaults = CacheMetaDefaults::new(|_| None, 0, 0);

/// Shards of the LRU eviction manager.
const SHARDS: usize = 16;

pub struct EdgeCache {
    storage: &'static MemCache,
    eviction: &'static Manager<SHARDS>,
    lock: &'static CacheKeyLockImpl,
    /// Remembers keys whose responses were uncacheable, so that dynamic pages bypass the cache
    /// (and its lock, which would otherwise make concurrent requests for one page wait in turn).
    predictor: &'static Predictor<SHARDS>,
    max_object: usize,
}

impl EdgeCache {
    /// Builds the cache. Pingora wants `'static` parts; there is one cache per process.
    pub fn new(settings: &CacheSettings) -> Self {
        let eviction: &'static Manager<SHARDS> =
            Box::leak(Box::new(Manager::with_capacity(settings.size as usize, 8192 / SHARDS)));
        let lock: &'static CacheKeyLockImpl = Box::leak(CacheLock::new_boxed(settings.lock_timeout));
        let cache = EdgeCache {
            storage: Box::leak(Box::new(MemCache::new())),
            eviction,
            lock,
            predictor: Box::leak(Box::new(Predictor::new(4096, None))),
            max_object: settings.max_object as usize,
        };
        metrics::CacheCollector::register(Arc::new(move || {
            (eviction.total_size() as u64, eviction.total_items() as u64, eviction.evicted_items() as u64)
        }));
        cache
    }

    /// Turns caching on for a GET or HEAD request without a body (a body, meaningless to the
    /// cache key, may still change the answer: some APIs search with a GET body).
    pub fn enable(&self, session: &mut Session) {
        let req = session.req_header();
        if !matches!(req.method, http::Method::GET | http::Method::HEAD) || !session.as_mut().is_body_empty() {
            return;
        }
        session.cache.enable(self.storage, Some(self.eviction), Some(self.predictor), Some(self.lock), None);
        session.cache.set_max_file_size_bytes(self.max_object);
    }
}

/// The cache key: host and path with query, length-prefixed so they cannot run into each other.
pub fn key(host: &str, req: &RequestHeader) -> CacheKey {
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    CacheKey::new(format!("{}:{host}{path}", host.len()), "")
}

/// Cacheable per Cache-Control and Expires, as Pingora implements them; never with Set-Cookie or
/// `Vary: *`. Requests with credentials never get here (the edge does not use the cache for
/// them), except on paths declared the same for every user (`shared_bases`), where RFC 9111
/// §3.5's rule for Authorization applies (stored only if `public`, `s-maxage` or
/// `must-revalidate` says so).
pub fn cacheable(req: &RequestHeader, resp: &ResponseHeader) -> RespCacheable {
    let vary_all = resp
        .headers
        .get_all(http::header::VARY)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim() == "*")));
    if resp.headers.contains_key(http::header::SET_COOKIE) || vary_all {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    let cc = CacheControl::from_resp_headers(resp);
    let credentials = req.headers.contains_key(http::header::AUTHORIZATION);
    resp_cacheable(cc.as_ref(), resp.clone(), credentials, &DEFAULTS)
}

/// Variance from the request headers the response varies on. `Accept-Encoding` is not one of
/// them: the cache holds the identity body and clients get their compression after it.
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let mut builder = VarianceBuilder::new();
    for value in meta.headers().get_all(http::header::VARY) {
        let Ok(names) = value.to_str() else { continue };
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name.eq_ignore_ascii_case("accept-encoding") {
                continue;
            }
            let name = name.to_ascii_lowercase();
            let value = req.headers.get(name.as_str()).map_or_else(Vec::new, |v| v.as_bytes().to_vec());
            builder.add_owned_name_value(name, value);
        }
    }
    builder.finalize()
}

/// `railproxy-cache` header value and metric label for a request's cache phase: HIT, MISS
/// (cacheable, fetched and stored), STALE, EXPIRED, REVALIDATED, DYNAMIC (fetched, not
/// cacheable) or BYPASS (the cache was not consulted, e.g. a POST).
pub fn status(phase: CachePhase) -> &'static str {
    match phase {
        CachePhase::Hit => "HIT",
        CachePhase::Miss => "MISS",
        CachePhase::Stale | CachePhase::StaleUpdating => "STALE",
        CachePhase::Expired => "EXPIRED",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "REVALIDATED",
        CachePhase::Disabled(NoCacheReason::NeverEnabled) | CachePhase::Uninit | CachePhase::CacheKey => "BYPASS",
        // Fetched and found uncacheable, or predicted uncacheable from earlier responses.
        CachePhase::Disabled(_) | CachePhase::Bypass => "DYNAMIC",
    }
}
