//! A real Chromium, headless, driven over the DevTools protocol on `--remote-debugging-pipe`:
//! navigations as a user makes them, and what crossed the network for each (the request
//! headers Chromium sent, the response headers, the bytes on the wire, the decoded body).
//!
//! Chromium reads commands on its fd 3 and writes on fd 4, each message JSON ended by a NUL.
//! A shell maps them to the child's stdin and stdout, so no descriptor juggling is needed here.
//!
//! It reaches loopback only: every name but `localhost` fails to resolve (a real page's images
//! and scripts elsewhere fail at once, instead of being fetched from the internet).

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::unix::pipe;

/// The browser binary: `$RAILPROXY_CHROMIUM`, else `chromium` on the PATH.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RAILPROXY_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join("chromium")).find(|p| p.exists())
}

/// Why this machine cannot run the browser tests, if it cannot.
pub fn unavailable() -> Option<String> {
    match binary() {
        None => Some("no chromium on the PATH (make test installs Debian's chromium)".into()),
        Some(_) => None,
    }
}

/// One navigation's main document as the network saw it.
#[derive(Debug, Default)]
pub struct Navigation {
    /// The headers Chromium sent (lower-case names).
    pub request_headers: HashMap<String, String>,
    pub status: u16,
    /// The response headers as received (lower-case names).
    pub response_headers: HashMap<String, String>,
    /// Bytes on the wire for the document, headers included (`encodedDataLength`).
    pub encoded_length: u64,
    /// The body as Chromium decoded it.
    pub body: Vec<u8>,
    /// The load failed: Chromium's error (e.g. `net::ERR_UNEXPECTED_CONTENT_DICTIONARY_HEADER`).
    pub failed: Option<String>,
}

impl Navigation {
    pub fn request(&self, name: &str) -> Option<&str> {
        self.request_headers.get(name).map(String::as_str)
    }

    pub fn response(&self, name: &str) -> Option<&str> {
        self.response_headers.get(name).map(String::as_str)
    }
}

/// A running headless Chromium with one page (tab) attached.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    stdin: pipe::Sender,
    stdout: BufReader<pipe::Receiver>,
    next_id: u64,
    events: VecDeque<Value>,
    session: String,
    _profile: tempfile::TempDir,
}

const LIMIT: Duration = Duration::from_secs(30);

fn headers_of(v: &Value) -> HashMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

impl Browser {
    /// Starts Chromium with a fresh profile and opens a blank page.
    pub async fn start() -> Result<Browser, String> {
        let bin = binary().ok_or("no chromium")?;
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let script = format!(
            "exec {} --headless=new --no-sandbox --disable-gpu --no-first-run --no-default-browser-check \
             --disable-background-networking --disable-component-update --disable-sync \
             '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1' \
             --user-data-dir={} --remote-debugging-pipe 3<&0 4>&1 0</dev/null 1>/dev/null 2>/dev/null",
            bin.display(),
            profile.path().display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting chromium: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stdin = pipe::Sender::from_file(std::fs::File::from(OwnedFd::from(stdin))).map_err(|e| e.to_string())?;
        let stdout =
            pipe::Receiver::from_file(std::fs::File::from(OwnedFd::from(stdout))).map_err(|e| e.to_string())?;
        let stdout = BufReader::new(stdout);
        let mut b = Browser {
            child,
            stdin,
            stdout,
            next_id: 0,
            events: VecDeque::new(),
            session: String::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}), false).await?;
        let target = target["targetId"].as_str().ok_or("no targetId")?.to_string();
        let attached = b.call("Target.attachToTarget", json!({"targetId": target, "flatten": true}), false).await?;
        b.session = attached["sessionId"].as_str().ok_or("no sessionId")?.to_string();
        b.call("Network.enable", json!({}), true).await?;
        b.call("Page.enable", json!({}), true).await?;
        // Every navigation goes to the network unless the page's own caching says otherwise.
        Ok(b)
    }

    async fn read(&mut self) -> Result<Value, String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(LIMIT, self.stdout.read_until(0, &mut buf))
            .await
            .map_err(|_| "chromium said nothing for 30 s".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("chromium closed its pipe".into());
        }
        if buf.last() == Some(&0) {
            buf.pop();
        }
        serde_json::from_slice(&buf).map_err(|e| format!("chromium sent no JSON: {e}"))
    }

    /// Sends a command (to the page's session when `on_page`) and waits for its answer; events
    /// that arrive meanwhile are kept for [`Browser::navigate`].
    pub async fn call(&mut self, method: &str, params: Value, on_page: bool) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if on_page {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).map_err(|e| e.to_string())?;
        bytes.push(0);
        self.stdin.write_all(&bytes).await.map_err(|e| format!("writing to chromium: {e}"))?;
        loop {
            let v = self.read().await?;
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    return Err(format!("{method}: {e}"));
                }
                return Ok(v["result"].clone());
            }
            if v.get("method").is_some() {
                self.events.push_back(v);
            }
        }
    }

    /// The next event for which `want` holds, reading more as needed.
    async fn event(&mut self, want: impl Fn(&Value) -> bool) -> Result<Value, String> {
        if let Some(i) = self.events.iter().position(&want) {
            return Ok(self.events.remove(i).expect("present"));
        }
        loop {
            let v = self.read().await?;
            if v.get("method").is_none() {
                continue;
            }
            if want(&v) {
                return Ok(v);
            }
            self.events.push_back(v);
        }
    }

    /// Navigates the page to `url` as a user would (typed into the address bar) and waits for
    /// its load event (or its failure).
    pub async fn navigate(&mut self, url: &str) -> Result<Navigation, String> {
        self.events.clear();
        let nav = self.call("Page.navigate", json!({"url": url}), true).await?;
        let mut out = Navigation::default();
        let loader = nav["loaderId"].as_str().unwrap_or_default().to_string();
        let sent = self
            .event(|e| {
                e["method"] == "Network.requestWillBeSent"
                    && e["params"]["type"] == "Document"
                    && e["params"]["loaderId"] == loader.as_str()
            })
            .await?;
        let request = sent["params"]["requestId"].as_str().unwrap_or_default().to_string();
        let is_ours = |e: &Value, method: &str| e["method"] == method && e["params"]["requestId"] == request.as_str();
        let extra = self.event(|e| is_ours(e, "Network.requestWillBeSentExtraInfo")).await?;
        out.request_headers = headers_of(&extra["params"]["headers"]);
        if let Some(error) = nav["errorText"].as_str().filter(|e| !e.is_empty()) {
            out.failed = Some(error.to_string());
            return Ok(out);
        }
        let end = self.event(|e| is_ours(e, "Network.loadingFinished") || is_ours(e, "Network.loadingFailed")).await?;
        if end["method"] == "Network.loadingFailed" {
            out.failed = Some(end["params"]["errorText"].as_str().unwrap_or("failed").to_string());
            return Ok(out);
        }
        out.encoded_length = end["params"]["encodedDataLength"].as_f64().unwrap_or(0.0) as u64;
        let response = self.event(|e| is_ours(e, "Network.responseReceived")).await?;
        out.status = response["params"]["response"]["status"].as_u64().unwrap_or(0) as u16;
        out.response_headers = headers_of(&response["params"]["response"]["headers"]);
        self.event(|e| e["method"] == "Page.loadEventFired").await?;
        let body = self.call("Network.getResponseBody", json!({"requestId": request}), true).await?;
        let text = body["body"].as_str().unwrap_or_default();
        out.body = if body["base64Encoded"].as_bool() == Some(true) {
            decode_base64(text).ok_or("bad base64 from chromium")?
        } else {
            text.as_bytes().to_vec()
        };
        Ok(out)
    }

    /// The value of a JavaScript expression in the page.
    pub async fn evaluate(&mut self, expression: &str) -> Result<Value, String> {
        let r = self.call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true}), true).await?;
        Ok(r["result"]["value"].clone())
    }

    /// Ends the browser (dropping it does too, less politely).
    pub async fn close(mut self) {
        let _ = self.call("Browser.close", json!({}), false).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The shell exec'd Chromium: this is its browser process, whose children follow it.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let keep = chunk.len().saturating_sub(1);
        out.extend_from_slice(&n.to_be_bytes()[1..1 + keep]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(super::decode_base64("aGVsbG8hIQ==").unwrap(), b"hello!!");
        assert_eq!(super::decode_base64("YWJj").unwrap(), b"abc");
    }
}
