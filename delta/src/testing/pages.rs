//! Generated page versions that look and change like a real dynamic page, for tests,
//! benchmarks and the demo.

use std::fmt::Write as _;

/// A small deterministic PRNG (xorshift64*): reproducible pages without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator; any seed is fine.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const WORDS: &[&str] = &[
    "city",
    "council",
    "votes",
    "new",
    "budget",
    "after",
    "long",
    "debate",
    "storm",
    "hits",
    "coast",
    "thousands",
    "without",
    "power",
    "local",
    "team",
    "wins",
    "final",
    "minute",
    "goal",
    "market",
    "prices",
    "rise",
    "again",
    "winter",
    "school",
    "opens",
    "library",
    "mayor",
    "plans",
    "bridge",
    "repair",
    "police",
    "search",
    "for",
    "missing",
    "hiker",
    "festival",
    "draws",
    "record",
    "crowd",
    "energy",
    "costs",
    "families",
    "react",
    "hospital",
    "expands",
    "emergency",
    "ward",
    "railway",
    "strike",
    "ends",
    "talks",
    "continue",
    "tonight",
    "weather",
    "warning",
    "snow",
    "expected",
    "election",
    "results",
    "surprise",
    "analysts",
    "company",
    "announces",
    "jobs",
    "factory",
];
const SECTIONS: &[&str] = &["Politics", "Local", "Sport", "Business", "Culture", "Weather", "Science"];

/// One story on the generated front page.
#[derive(Debug, Clone)]
struct Story {
    id: u64,
    section: &'static str,
    title: String,
    teaser: String,
    image: String,
    minutes_ago: u32,
    comments: u32,
}

/// Generates consecutive versions of a news front page (HTML) of roughly a target size.
///
/// Between versions, as on a real front page: a story or two is added at the top and the
/// oldest drop off, a few stories swap places, "minutes ago" and comment counters move, and
/// the page's timestamp and request nonce change. Consecutive versions share ~95 % of their
/// lines, so deltas are small but never trivial.
#[derive(Debug, Clone)]
pub struct PageGenerator {
    rng: Rng,
    stories: Vec<Story>,
    next_id: u64,
    version: u64,
    target_len: usize,
}

impl PageGenerator {
    /// A generator of pages of about `target_len` bytes.
    pub fn new(seed: u64, target_len: usize) -> Self {
        let mut g =
            PageGenerator { rng: Rng::new(seed), stories: Vec::new(), next_id: 3_300_000, version: 0, target_len };
        // Stories average ~1 KB of HTML each.
        let count = (target_len / 1000).max(3);
        for _ in 0..count {
            let s = g.story();
            g.stories.push(s);
        }
        g
    }

    fn sentence(&mut self, words: usize) -> String {
        let mut s = String::new();
        for i in 0..words {
            if i > 0 {
                s.push(' ');
            }
            let w = self.rng.pick(WORDS);
            if i == 0 {
                let mut c = w.chars();
                if let Some(f) = c.next() {
                    s.extend(f.to_uppercase());
                    s.push_str(c.as_str());
                }
            } else {
                s.push_str(w);
            }
        }
        s
    }

    fn story(&mut self) -> Story {
        self.next_id += 1 + self.rng.below(40) as u64;
        let title_words = 5 + self.rng.below(6);
        let teaser_words = 18 + self.rng.below(20);
        let image = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            self.rng.next_u64() as u32,
            self.rng.next_u64() as u16,
            self.rng.next_u64() as u16,
            self.rng.next_u64() as u16,
            self.rng.next_u64() & 0xffff_ffff_ffff
        );
        Story {
            id: self.next_id,
            section: self.rng.pick(SECTIONS),
            title: self.sentence(title_words),
            teaser: self.sentence(teaser_words),
            image,
            minutes_ago: 0,
            comments: 0,
        }
    }

    /// Moves the page on by one version.
    pub fn advance(&mut self) {
        self.version += 1;
        for s in &mut self.stories {
            s.minutes_ago += 5 + self.rng.below(10) as u32;
            if self.rng.below(3) == 0 {
                s.comments += 1 + self.rng.below(7) as u32;
            }
        }
        let fresh = 1 + self.rng.below(2);
        for _ in 0..fresh {
            let s = self.story();
            self.stories.insert(0, s);
            self.stories.pop();
        }
        for _ in 0..2 {
            let a = self.rng.below(self.stories.len());
            let b = self.rng.below(self.stories.len());
            self.stories.swap(a, b);
        }
    }

    /// Renders the current version.
    pub fn render(&self) -> String {
        let mut html = String::with_capacity(self.target_len + 4096);
        let v = self.version;
        let _ = write!(
            html,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>The Daily Example - News, Sport and Weather</title>\n\
             <meta name=\"generated\" content=\"2026-11-25T10:{:02}:{:02}Z\">\n\
             <meta name=\"csrf-token\" content=\"{:016x}\">\n\
             <link rel=\"stylesheet\" href=\"/static/site.css?v=41\">\n</head>\n<body>\n\
             <header class=\"site-header\">\n  <a class=\"logo\" href=\"/\">The Daily Example</a>\n  <nav>\n",
            (v * 5 / 60) % 60,
            (v * 17) % 60,
            Rng::new(v ^ 0xdead_beef).next_u64()
        );
        for section in SECTIONS {
            let _ = writeln!(html, "    <a href=\"/{}\">{}</a>", section.to_lowercase(), section);
        }
        html.push_str("  </nav>\n</header>\n<main class=\"front-page\">\n");
        for (i, s) in self.stories.iter().enumerate() {
            let class = if i == 0 {
                "lead"
            } else if i < 4 {
                "secondary"
            } else {
                "teaser"
            };
            let slug: String = s.title.to_lowercase().replace(' ', "-");
            let _ = write!(
                html,
                "  <article class=\"story {class}\" data-id=\"{id}\">\n    <a href=\"/{sec}/{slug}-{id}\">\n      \
                 <picture><img src=\"https://img.example.net/{img}.jpeg?w=640\" srcset=\"https://img.example.net/{img}.jpeg?w=320 320w, https://img.example.net/{img}.jpeg?w=1024 1024w\" alt=\"\" loading=\"lazy\"></picture>\n      \
                 <span class=\"section\">{section}</span>\n      <h2>{title}</h2>\n    </a>\n    <p class=\"teaser\">{teaser}.</p>\n    \
                 <footer><time>{ago} minutes ago</time> <span class=\"comments\">{comments} comments</span></footer>\n  </article>\n",
                id = s.id,
                sec = s.section.to_lowercase(),
                img = s.image,
                section = s.section,
                title = s.title,
                teaser = s.teaser,
                ago = s.minutes_ago,
                comments = s.comments,
            );
        }
        let _ = write!(
            html,
            "</main>\n<footer class=\"site-footer\">\n  <p>Page version {v}. Readers online: {}</p>\n  \
             <p>&copy; 2026 The Daily Example. All rights reserved.</p>\n</footer>\n\
             <script src=\"/static/app.js?v=41\" defer></script>\n</body>\n</html>\n",
            1000 + (Rng::new(v).next_u64() % 9000)
        );
        html
    }

    /// Renders the current version, then advances.
    pub fn next_page(&mut self) -> Vec<u8> {
        let page = self.render().into_bytes();
        self.advance();
        page
    }

    /// `count` consecutive versions.
    pub fn versions(seed: u64, target_len: usize, count: usize) -> Vec<Vec<u8>> {
        let mut g = PageGenerator::new(seed, target_len);
        (0..count).map(|_| g.next_page()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_sized() {
        let a = PageGenerator::versions(7, 100_000, 3);
        let b = PageGenerator::versions(7, 100_000, 3);
        assert_eq!(a, b);
        for v in &a {
            assert!((80_000..140_000).contains(&v.len()), "len {}", v.len());
        }
        assert_ne!(a[0], a[1]);
    }

    #[test]
    fn consecutive_versions_share_most_lines() {
        let v = PageGenerator::versions(9, 100_000, 2);
        let old: std::collections::HashSet<&[u8]> = v[0].split(|&b| b == b'\n').collect();
        let lines: Vec<&[u8]> = v[1].split(|&b| b == b'\n').collect();
        let same = lines.iter().filter(|l| old.contains(*l)).count();
        let share = same as f64 / lines.len() as f64;
        assert!((0.85..0.999).contains(&share), "{share}");
    }
}
