//! Fitting SMS text: encoding, segment count, smart encoding and the cap (`fit`), over
//! 100,000 random messages of four kinds, each call timed on its own (target: under
//! 2 µs median for a 160-character text).
//!
//! `cargo bench -p flare-shared --bench sms_text [-- --messages N]`
//!
//! The kinds: a 160-character GSM-7 text (one segment, nothing to do but count); the
//! same with curly quotes and a dash (smart encoding replaces them); a 160-character
//! UCS-2 text (Cyrillic and an emoji: counted in UTF-16 units, cut to 3 segments); a
//! 1,000-character GSM-7 dispatch with reply instructions and a link, cut to 1 segment
//! (the binary search over cut points). Each figure includes the clock read around the
//! call (about 20 ns here), not the allocation of the input.

use flare_shared::domain::segments::{SmsPolicy, fit};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift64*), so every run times the same texts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "Engine", "7", "to", "12", "Main", "St,", "smoke", "showing.", "Ladder", "3", "stage", "at",
    "the", "north", "gate;", "caller", "reports", "people", "trapped", "é", "Ä",
];
const TYPOGRAPHY: &[&str] = &["“Main", "St”", "–", "caller’s", "…", "•"];
const CYRILLIC: &[&str] = &[
    "Пожар",
    "на",
    "улице",
    "Ленина,",
    "дом",
    "12",
    "🔥",
    "срочно",
];
const TAIL: &str =
    "Reply 1 responding, 2 unavailable or https://flare.example.org/r/Ab3dEf7hIj9kLm0n";

/// A text of about `chars` characters from `words`, with `spice` mixed in one in four.
fn text(rng: &mut Rng, chars: usize, words: &[&str], spice: &[&str]) -> String {
    let mut s = String::new();
    while s.chars().count() < chars {
        if !s.is_empty() {
            s.push(' ');
        }
        let w = if !spice.is_empty() && rng.next().is_multiple_of(4) {
            rng.pick(spice)
        } else {
            rng.pick(words)
        };
        s.push_str(w);
    }
    s.chars().take(chars).collect()
}

struct Kind {
    name: &'static str,
    texts: Vec<String>,
    tail: Option<&'static str>,
    policy: SmsPolicy,
}

fn kinds(n: usize) -> Vec<Kind> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let per = n / 4;
    let three = SmsPolicy::default();
    let one = SmsPolicy {
        smart_encoding: true,
        max_segments: 1,
    };
    vec![
        Kind {
            name: "160 chars, GSM-7",
            texts: (0..per).map(|_| text(&mut rng, 160, WORDS, &[])).collect(),
            tail: None,
            policy: three,
        },
        Kind {
            name: "160 chars, curly quotes (smart)",
            texts: (0..per)
                .map(|_| text(&mut rng, 160, WORDS, TYPOGRAPHY))
                .collect(),
            tail: None,
            policy: three,
        },
        Kind {
            name: "160 chars, UCS-2 (cut to 3)",
            texts: (0..per)
                .map(|_| text(&mut rng, 160, CYRILLIC, &[]))
                .collect(),
            tail: None,
            policy: three,
        },
        Kind {
            name: "1,000 chars + link (cut to 1)",
            texts: (0..per)
                .map(|_| text(&mut rng, 1000, WORDS, TYPOGRAPHY))
                .collect(),
            tail: Some(TAIL),
            policy: one,
        },
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args
        .iter()
        .position(|a| a == "--messages")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000usize);
    let kinds = kinds(n);
    println!(
        "sms_text: {} messages, {} per kind; per message, clock read included",
        kinds.iter().map(|k| k.texts.len()).sum::<usize>(),
        kinds[0].texts.len()
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "kind", "median", "p99", "max", "mean", "segments"
    );
    for k in &kinds {
        // Warm up the code and the caches on the first 1,000.
        for t in k.texts.iter().take(1000) {
            black_box(fit(black_box(t), k.tail, k.policy));
        }
        let mut times = Vec::with_capacity(k.texts.len());
        let mut segments = 0u64;
        let started = Instant::now();
        for t in &k.texts {
            let at = Instant::now();
            let f = black_box(fit(black_box(t), k.tail, k.policy));
            times.push(at.elapsed());
            segments += u64::from(f.count.segments);
        }
        let total = started.elapsed();
        times.sort();
        println!(
            "{:<34} {:>7.2}µs {:>7.2}µs {:>7.2}µs {:>7.2}µs {:>10.2}",
            k.name,
            percentile(&times, 0.5).as_secs_f64() * 1e6,
            percentile(&times, 0.99).as_secs_f64() * 1e6,
            times.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
            total.as_secs_f64() * 1e6 / times.len() as f64,
            segments as f64 / times.len() as f64,
        );
    }
}
