//! `railproxy delta explain`: what changed between two versions, and what each way of
//! sending the new one costs. A line diff is for people; the wire uses dcz.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use delta::Version;
use delta::codec::{self, DeltaParams};
use similar::{ChangeTag, DiffTag, TextDiff};

use super::files;
use crate::exit::CmdResult;
use crate::units::thousands;

/// Longest line shown, in characters; pages often have kilobyte-long lines.
const MAX_LINE: usize = 120;
/// Lines shown per changed region.
const MAX_HUNK_LINES: usize = 12;

pub fn run(base_path: &Path, new_path: &Path, hunks: usize) -> CmdResult {
    let base = Version::new(files::read(base_path)?);
    let new = files::read(new_path)?;
    let old_text = String::from_utf8_lossy(&base.body);
    let new_text = String::from_utf8_lossy(&new);
    let diff = TextDiff::configure().timeout(Duration::from_secs(5)).diff_lines(old_text.as_ref(), new_text.as_ref());

    let (mut same, mut removed, mut added, mut added_bytes) = (0usize, 0usize, 0usize, 0usize);
    for op in diff.ops() {
        let (tag, old, new_range) = op.as_tag_tuple();
        match tag {
            DiffTag::Equal => same += old.len(),
            DiffTag::Delete => removed += old.len(),
            DiffTag::Insert => added += new_range.len(),
            DiffTag::Replace => {
                removed += old.len();
                added += new_range.len();
            }
        }
        if matches!(tag, DiffTag::Insert | DiffTag::Replace) {
            added_bytes += new_range.filter_map(|i| diff.new_slice(i)).map(str::len).sum::<usize>();
        }
    }
    let groups = diff.grouped_ops(1);
    let dcz = codec::encode_with(&base, &new, &DeltaParams::default()).map_err(anyhow::Error::new)?;
    let zstd = codec::compress(&new, codec::FULL_LEVEL).map_err(anyhow::Error::new)?;
    let new_lines = same + added;
    let pct = |n: usize| 100.0 * n as f64 / new.len().max(1) as f64;

    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "old  {}: {} bytes, {} lines, version {}",
        base_path.display(),
        thousands(base.body.len() as u64),
        same + removed,
        base.id.to_sf()
    );
    let _ = writeln!(
        out,
        "new  {}: {} bytes, {} lines, version {}",
        new_path.display(),
        thousands(new.len() as u64),
        new_lines,
        Version::new(new.clone()).id.to_sf()
    );
    let _ = writeln!(
        out,
        "lines: {} unchanged, {} removed, {} added ({:.1} % of new lines) in {} changed regions; {} bytes of added lines",
        thousands(same as u64),
        thousands(removed as u64),
        thousands(added as u64),
        100.0 * added as f64 / new_lines.max(1) as f64,
        groups.len(),
        thousands(added_bytes as u64)
    );
    let _ = writeln!(
        out,
        "sent:  dcz delta {} bytes ({:.2} % of new)  |  zstd -3 alone {} bytes ({:.1} %)  |  raw {} bytes",
        thousands(dcz.len() as u64),
        pct(dcz.len()),
        thousands(zstd.len() as u64),
        pct(zstd.len()),
        thousands(new.len() as u64)
    );
    for group in groups.iter().take(hunks) {
        let (first, last) = (&group[0], &group[group.len() - 1]);
        let _ = writeln!(
            out,
            "@@ -{},{} +{},{} @@",
            first.old_range().start + 1,
            last.old_range().end - first.old_range().start,
            first.new_range().start + 1,
            last.new_range().end - first.new_range().start
        );
        let changes: Vec<_> = group.iter().flat_map(|op| diff.iter_changes(op)).collect();
        for change in changes.iter().take(MAX_HUNK_LINES) {
            let sign = match change.tag() {
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
                ChangeTag::Equal => ' ',
            };
            let line = change.value().trim_end_matches(['\n', '\r']);
            let shown: String = line.chars().take(MAX_LINE).collect();
            let more = if shown.len() < line.len() { " …" } else { "" };
            let _ = writeln!(out, "{sign} {shown}{more}");
        }
        if changes.len() > MAX_HUNK_LINES {
            let _ = writeln!(out, "  … {} more lines in this region", changes.len() - MAX_HUNK_LINES);
        }
    }
    if groups.len() > hunks {
        let _ = writeln!(out, "… and {} more changed regions (--hunks N to show more)", groups.len() - hunks);
    }
    Ok(())
}
