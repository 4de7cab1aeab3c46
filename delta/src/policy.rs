//! Which responses are worth encoding: text-like content types.

/// True for media types that compress well: text/*, JSON, JavaScript, XML, SVG, and friends.
/// Images, video, archives and already-compressed formats stream through untouched.
pub fn is_compressible(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let Some((top, sub)) = essence.split_once('/') else {
        return false;
    };
    if top == "text" {
        return true;
    }
    if top != "application" && top != "image" {
        return false;
    }
    if top == "image" {
        return sub == "svg+xml";
    }
    matches!(
        sub,
        "json"
            | "javascript"
            | "ecmascript"
            | "x-javascript"
            | "xml"
            | "xhtml+xml"
            | "rss+xml"
            | "atom+xml"
            | "ld+json"
            | "manifest+json"
            | "graphql-response+json"
            | "x-www-form-urlencoded"
            | "wasm"
    ) || sub.ends_with("+json")
        || sub.ends_with("+xml")
}

#[cfg(test)]
mod tests {
    use super::is_compressible;

    #[test]
    fn text_like_types() {
        for t in [
            "text/html",
            "text/html; charset=utf-8",
            "TEXT/CSS",
            "application/json",
            "application/problem+json",
            "application/javascript",
            "application/atom+xml",
            "image/svg+xml",
        ] {
            assert!(is_compressible(t), "{t}");
        }
        for t in [
            "image/png",
            "application/octet-stream",
            "video/mp4",
            "application/zip",
            "application/gzip",
            "",
            "html",
            "font/woff2",
        ] {
            assert!(!is_compressible(t), "{t}");
        }
    }
}
