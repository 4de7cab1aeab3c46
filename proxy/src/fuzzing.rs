//! Bodies of the fuzz targets in `proxy/fuzz/`, kept here so that each target is one line and
//! the committed seeds are replayed by an ordinary test (`tests/fuzz_seeds.rs`).
//!
//! Each function panics exactly when an invariant breaks; any input is otherwise fine.

/// Arbitrary bytes as a configuration file, and as a fleet inventory. Invariants: no panic; a
/// refusal lists at least one problem, each with a message; an inventory that reads renders
/// (or lists its problems) and every rendered file is YAML.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(problems) = crate::config::Config::parse(text) {
        explained(&problems);
    }
    match crate::ops::fleet::Fleet::parse(text, std::path::Path::new("")) {
        Err(problems) => explained(&problems),
        Ok(fleet) => match crate::ops::fleet::render(&fleet) {
            Err(problems) => explained(&problems),
            Ok(hosts) => {
                for h in hosts {
                    let parsed = serde_yaml::from_str::<serde_yaml::Value>(&h.config);
                    assert!(parsed.is_ok(), "{} rendered YAML that does not parse: {parsed:?}", h.name);
                }
            }
        },
    }
}

fn explained(problems: &[crate::config::reader::Problem]) {
    assert!(!problems.is_empty(), "refused without a reason");
    for p in problems {
        assert!(!p.message.is_empty(), "a problem without a message at {:?}", p.path);
    }
}

/// Arbitrary bytes as the header values and settings railproxy parses itself: Accept-Encoding,
/// sizes and durations. Invariants: no panic; a size or duration that parses prints and parses
/// back to itself.
pub fn values(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for token in ["dcz", "zstd", "gzip"] {
        let _ = crate::http_util::accepts(Some(&text), token);
    }
    if let Ok(n) = crate::units::parse_size(&text) {
        assert_eq!(crate::units::parse_size(&n.to_string()), Ok(n), "size {text:?}");
    }
    if let Ok(d) = crate::units::parse_duration(&text) {
        let printed = if d.subsec_nanos() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) };
        assert_eq!(crate::units::parse_duration(&printed), Ok(d), "duration {text:?} printed as {printed}");
    }
}
