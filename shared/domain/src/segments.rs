//! SMS text as carriers bill it: the encoding a text needs, how many segments it takes,
//! look-alike characters replaced so they do not force UCS-2, and a cap on segments.
//!
//! The rules are those of 3GPP TS 23.038 (the GSM 7-bit default alphabet and its
//! extension table) and TS 23.040 (concatenation: a 6-octet user data header leaves 153
//! septets or 67 UTF-16 code units a segment):
//! - GSM-7: 160 septets in one segment, else 153 a segment; a basic character is one
//!   septet, an extension character (`^ { } \ [ ] ~ | €`) two (escape and character),
//!   and the pair is never split across segments.
//! - UCS-2: 70 UTF-16 code units in one segment, else 67 a segment; a surrogate pair (an
//!   emoji, say) is never split.
//!
//! One character outside GSM-7 makes the whole text UCS-2.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsEncoding {
    Gsm7,
    Ucs2,
}

impl SmsEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            SmsEncoding::Gsm7 => "gsm7",
            SmsEncoding::Ucs2 => "ucs2",
        }
    }
}

/// Septets in a text that fits one GSM-7 segment, and in each part of a longer one.
pub const GSM7_SINGLE: usize = 160;
pub const GSM7_PART: usize = 153;
/// UTF-16 code units in a text that fits one UCS-2 segment, and in each part.
pub const UCS2_SINGLE: usize = 70;
pub const UCS2_PART: usize = 67;

/// What a text costs: its encoding and how many segments carriers bill for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SmsCount {
    pub encoding: SmsEncoding,
    pub segments: u32,
}

/// Septets of each ASCII character in GSM-7: 1 basic, 2 extension, 0 not in it.
const ASCII_SEPTETS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut c = 0x20;
    while c < 0x7F {
        t[c] = 1;
        c += 1;
    }
    t[b'\n' as usize] = 1;
    t[b'\r' as usize] = 1;
    t[b'`' as usize] = 0;
    let ext = b"^{}\\[]~|";
    let mut i = 0;
    while i < ext.len() {
        t[ext[i] as usize] = 2;
        i += 1;
    }
    t[0x0C] = 2; // form feed: the extension table's page break
    t
};

/// Septets of `c` in GSM-7 (1 or 2), or `None` when GSM-7 cannot carry it.
pub fn gsm7_septets(c: char) -> Option<usize> {
    let n = if c.is_ascii() {
        ASCII_SEPTETS[c as usize]
    } else {
        match c {
            '£' | '¥' | 'è' | 'é' | 'ù' | 'ì' | 'ò' | 'Ç' | 'Ø' | 'ø' | 'Å' | 'å' | 'Δ' | 'Φ'
            | 'Γ' | 'Λ' | 'Ω' | 'Π' | 'Ψ' | 'Σ' | 'Θ' | 'Ξ' | 'Æ' | 'æ' | 'ß' | 'É' | '¤' | '¡'
            | 'Ä' | 'Ö' | 'Ñ' | 'Ü' | '§' | '¿' | 'ä' | 'ö' | 'ñ' | 'ü' | 'à' => 1,
            '€' => 2,
            _ => 0,
        }
    };
    (n > 0).then_some(usize::from(n))
}

/// Whether GSM-7 carries every character of `text`.
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| gsm7_septets(c).is_some())
}

/// The encoding `text` needs and its segments. An empty text is one segment.
pub fn count(text: &str) -> SmsCount {
    let mut septets = 0;
    for c in text.chars() {
        match gsm7_septets(c) {
            Some(n) => septets += n,
            None => {
                return SmsCount {
                    encoding: SmsEncoding::Ucs2,
                    segments: ucs2_segments(text),
                };
            }
        }
    }
    let segments = if septets <= GSM7_SINGLE {
        1
    } else {
        packed(text, GSM7_PART, |c| gsm7_septets(c).unwrap_or(1))
    };
    SmsCount {
        encoding: SmsEncoding::Gsm7,
        segments,
    }
}

fn ucs2_segments(text: &str) -> u32 {
    if text.len() <= UCS2_SINGLE || text.encode_utf16().count() <= UCS2_SINGLE {
        return 1;
    }
    packed(text, UCS2_PART, char::len_utf16)
}

/// Segments of `part` units each, filled in order, a character's units never split.
fn packed(text: &str, part: usize, units: impl Fn(char) -> usize) -> u32 {
    let (mut segments, mut used) = (1, 0);
    for c in text.chars() {
        let n = units(c);
        if used + n > part {
            segments += 1;
            used = 0;
        }
        used += n;
    }
    segments
}

/// The GSM-7 look-alike of a character outside GSM-7, when it has one. Written from
/// Twilio's published Smart Encoding table (the `SmartEncodingMap` of
/// github.com/TwilioDevEd/message-segment-calculator), with primes, the minus sign,
/// figure dash and non-breaking hyphen added, each Unicode space as one space (not two),
/// and the single angle quotation marks pointing the way they point.
pub fn look_alike(c: char) -> Option<&'static str> {
    Some(match c {
        // Double quotes and primes.
        '\u{00AB}' | '\u{00BB}' | '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}'
        | '\u{02BA}' | '\u{02EE}' | '\u{2033}' | '\u{2036}' | '\u{275D}' | '\u{275E}'
        | '\u{301D}' | '\u{301E}' | '\u{FF02}' => "\"",
        // Single quotes, apostrophes, primes and accents used as apostrophes.
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{2035}'
        | '\u{02B9}' | '\u{02BB}' | '\u{02BC}' | '\u{02BD}' | '\u{02C8}' | '\u{02CA}'
        | '\u{02CB}' | '\u{00B4}' | '`' | '\u{275B}' | '\u{275C}' | '\u{FF07}' => "'",
        '\u{2039}' => "<",
        '\u{203A}' => ">",
        // Dashes, hyphens, the minus sign and bullets.
        '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2015}'
        | '\u{2043}' | '\u{2212}' | '\u{FE63}' | '\u{FF0D}' | '\u{2022}' | '\u{2023}'
        | '\u{25E6}' | '\u{2219}' => "-",
        '\u{2026}' => "...",
        '\u{203C}' => "!!",
        // Spaces: no-break, the typographic ones, the ideographic one, and tab.
        '\t' | '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => " ",
        '\u{00BC}' => "1/4",
        '\u{00BD}' => "1/2",
        '\u{00BE}' => "3/4",
        '\u{00F7}' | '\u{2044}' | '\u{2215}' => "/",
        '\u{2217}' | '\u{204E}' => "*",
        '\u{3001}' => ",",
        '\u{3002}' | '\u{FF61}' => ".",
        // Fullwidth forms of ASCII (U+FF01 to U+FF5E): the ASCII character.
        '\u{FF01}'..='\u{FF5E}' => fullwidth(c)?,
        _ => return None,
    })
}

/// The ASCII character a fullwidth form stands for, as a static string.
fn fullwidth(c: char) -> Option<&'static str> {
    const ASCII: &str = "!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_'abcdefghijklmnopqrstuvwxyz{|}~";
    let i = (c as usize).checked_sub(0xFF01)?;
    ASCII.get(i..i + 1)
}

/// `text` with its look-alikes replaced, when that makes it GSM-7; else `text` as it is
/// (it needs UCS-2 for another reason, and a replaced quote would save nothing).
pub fn smart(text: &str) -> Cow<'_, str> {
    if is_gsm7(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if gsm7_septets(c).is_some() {
            out.push(c);
        } else if let Some(s) = look_alike(c) {
            out.push_str(s);
        } else {
            return Cow::Borrowed(text);
        }
    }
    Cow::Owned(out)
}

/// The most segments `max_segments` may be set to, and its default.
pub const MAX_SEGMENTS_LIMIT: u8 = 10;
pub const DEFAULT_MAX_SEGMENTS: u8 = 3;

/// How a control center's SMS are fitted: its `smart_encoding` and `max_segments`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsPolicy {
    pub smart_encoding: bool,
    pub max_segments: u8,
}

impl Default for SmsPolicy {
    fn default() -> Self {
        Self {
            smart_encoding: true,
            max_segments: DEFAULT_MAX_SEGMENTS,
        }
    }
}

/// A text ready to send, with what it costs and whether it was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FittedSms {
    pub text: String,
    pub count: SmsCount,
    pub cut: bool,
}

/// What marks a cut text.
pub const CUT_MARK: &str = "...";

/// The SMS of `body` and, on its own line after it, `tail` (a dispatch's reply
/// instructions and response link): look-alikes replaced when the policy says so, and a
/// body too long for `max_segments` cut at a word boundary (or, for a first word too
/// long, at a character that does not join the next) and marked [`CUT_MARK`]. The tail is
/// never cut (a cut link opens nothing): when not even the mark fits beside it, it goes
/// alone, over the cap if it is longer than the cap by itself.
pub fn fit(body: &str, tail: Option<&str>, policy: SmsPolicy) -> FittedSms {
    let body = if policy.smart_encoding {
        smart(body)
    } else {
        Cow::Borrowed(body)
    };
    let max = u32::from(policy.max_segments.max(1));
    let whole = joined(&body, false, tail);
    let count_whole = count(&whole);
    if count_whole.segments <= max {
        return FittedSms {
            text: whole,
            count: count_whole,
            cut: false,
        };
    }
    let fits = |end: usize| count(&joined(body[..end].trim_end(), true, tail)).segments <= max;
    // The longest prefix that fits: segments never fall as a prefix grows.
    // No text of more than 160 characters a segment fits: the search need not look past.
    let most = GSM7_SINGLE * max as usize;
    let ends: Vec<usize> = body.char_indices().take(most + 1).map(|(i, _)| i).collect();
    let (mut lo, mut hi) = (0, ends.len().saturating_sub(1));
    if !fits(0) {
        let text = tail.unwrap_or(CUT_MARK).to_string();
        let count = count(&text);
        return FittedSms {
            text,
            count,
            cut: true,
        };
    }
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(ends[mid]) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let kept = word_end(&body, ends[lo]);
    let text = joined(body[..kept].trim_end(), true, tail);
    FittedSms {
        count: count(&text),
        text,
        cut: true,
    }
}

/// `body[..end]` ended at a word boundary: the last white space before `end`, if the
/// text is cut inside a word and an earlier one exists; else `end`, moved back off any
/// character that joins the next (a combining mark, a zero-width joiner, a variation
/// selector, a skin tone), so an emoji or accented letter is not cut in half.
fn word_end(body: &str, end: usize) -> usize {
    let next = body[end..].chars().next();
    if next.is_none_or(char::is_whitespace) {
        return end;
    }
    if let Some(space) = body[..end].rfind(char::is_whitespace)
        && !body[..space].trim_end().is_empty()
    {
        return space;
    }
    let mut end = end;
    loop {
        let next = body[end..].chars().next();
        let prev = body[..end].chars().next_back();
        match (prev, next) {
            (Some(p), Some(n)) if clings(n) || p == '\u{200D}' => end -= p.len_utf8(),
            _ => return end,
        }
    }
}

/// A character that belongs with the one before it.
fn clings(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'
        | '\u{1AB0}'..='\u{1AFF}'
        | '\u{20D0}'..='\u{20FF}'
        | '\u{200D}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{1F3FB}'..='\u{1F3FF}'
        | '\u{E0020}'..='\u{E007F}')
}

fn joined(body: &str, mark: bool, tail: Option<&str>) -> String {
    let mut s = String::with_capacity(body.len() + 4 + tail.map_or(0, str::len));
    s.push_str(body);
    if mark {
        s.push_str(CUT_MARK);
    }
    if let Some(t) = tail {
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(t);
    }
    s
}

#[cfg(test)]
mod tests;
