//! Text checked as sent: names, usernames, sender ids and header values may hold no
//! character that is invisible or changes how the rest is shown, so a name cannot pass
//! for another in the console, a log line or a provider's records. Nothing is trimmed
//! away first: what is stored is what was sent, or the request is refused.

use super::ValidationError;

/// Why a character may not appear in a name, username, sender id or header value.
pub fn hidden(c: char) -> Option<&'static str> {
    let n = c as u32;
    Some(match c {
        _ if c.is_control() => "control characters",
        '\u{2028}' | '\u{2029}' => "line or paragraph separators",
        '\u{061C}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}' => "bidirectional overrides or isolates",
        '\u{00AD}'
        | '\u{034F}'
        | '\u{115F}'
        | '\u{1160}'
        | '\u{17B4}'
        | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200D}'
        | '\u{2060}'..='\u{2064}'
        | '\u{206A}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' => "zero-width or invisible characters",
        '\u{E0000}'..='\u{E007F}' => "tag characters",
        '\u{FDD0}'..='\u{FDEF}' => "noncharacters",
        _ if n & 0xFFFE == 0xFFFE => "noncharacters",
        _ => return None,
    })
}

/// The characters [`hidden`] refuses, as the inside of a regular-expression character
/// class (the OpenAPI document's patterns). Code points above U+FFFF are written as
/// themselves, as JSON Schema's Unicode patterns read them.
pub fn hidden_class() -> String {
    let mut class = String::from(
        r"\u0000-\u001f\u007f-\u009f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200d\u2060-\u2064\u206a-\u206f\u3164\ufeff\uffa0\ufff0-\ufff8\ufdd0-\ufdef\ufffe\uffff",
    );
    for (lo, hi) in [(0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE007F)] {
        class.push(char::from_u32(lo).unwrap_or_default());
        class.push('-');
        class.push(char::from_u32(hi).unwrap_or_default());
    }
    for plane in 1..=16u32 {
        for low in [0xFFFE, 0xFFFF] {
            class.extend(char::from_u32((plane << 16) | low));
        }
    }
    class
}

/// The first character [`hidden`] refuses, as a reason naming it (`U+202E`).
pub fn check_visible(s: &str) -> Result<(), ValidationError> {
    match s.chars().find_map(|c| hidden(c).map(|why| (c, why))) {
        Some((c, why)) => Err(ValidationError::new(format!(
            "must not contain {why} (U+{:04X})",
            c as u32
        ))),
        None => Ok(()),
    }
}

/// One line of visible text as sent: 1 to `max` characters, no leading or trailing
/// blank, nothing [`hidden`] refuses.
pub fn visible_line(s: &str, max: usize) -> Result<String, ValidationError> {
    if s.is_empty() {
        return Err(ValidationError::new("must not be empty"));
    }
    if s.chars().count() > max {
        return Err(ValidationError::new(format!(
            "must be at most {max} characters"
        )));
    }
    check_visible(s)?;
    if s.trim() != s {
        return Err(ValidationError::new("must not start or end with a space"));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refused_class_is_refused_and_named_anywhere_in_the_text() {
        for (c, why) in [
            ('\t', "control"),
            ('\u{0}', "control"),
            ('\u{7F}', "control"),
            ('\u{85}', "control"),
            ('\u{9B}', "control"),
            ('\u{2028}', "separators"),
            ('\u{202E}', "bidirectional"),
            ('\u{2066}', "bidirectional"),
            ('\u{2069}', "bidirectional"),
            ('\u{200F}', "bidirectional"),
            ('\u{061C}', "bidirectional"),
            ('\u{200B}', "zero-width"),
            ('\u{200D}', "zero-width"),
            ('\u{2060}', "zero-width"),
            ('\u{FEFF}', "zero-width"),
            ('\u{00AD}', "zero-width"),
            ('\u{3164}', "zero-width"),
            ('\u{FFFF}', "noncharacters"),
            ('\u{FDD0}', "noncharacters"),
            ('\u{10FFFE}', "noncharacters"),
            ('\u{E0041}', "tag"),
            ('\u{E007F}', "tag"),
        ] {
            for at in [format!("{c}Ana"), format!("A{c}na"), format!("Ana{c}")] {
                let e = visible_line(&at, 100).unwrap_err().0;
                assert!(e.contains(why), "{c:?} in {at:?}: {e}");
                assert!(e.contains(&format!("U+{:04X}", c as u32)), "{e}");
            }
        }
    }

    #[test]
    fn text_is_taken_as_sent_or_refused() {
        for ok in [
            "Ana Silva",
            "José Ñúñez",
            "李小龍",
            "O'Brien-Smith",
            "a",
            "❤️ Ana",
        ] {
            assert_eq!(visible_line(ok, 100).unwrap(), ok);
        }
        for bad in [" Ana", "Ana ", "\u{3000}Ana", "Ana\u{a0}", ""] {
            assert!(visible_line(bad, 100).is_err(), "{bad:?}");
        }
        assert!(visible_line(&"a".repeat(101), 100).is_err());
    }

    #[test]
    fn the_schema_class_refuses_what_the_code_refuses() {
        let class = hidden_class();
        let re = regex_lite::Regex::new(&format!("[{class}]")).unwrap();
        // Every code point: the class and `hidden` agree.
        for n in 0..=0x10FFFFu32 {
            let Some(c) = char::from_u32(n) else { continue };
            assert_eq!(
                re.is_match(c.encode_utf8(&mut [0; 4])),
                hidden(c).is_some(),
                "U+{n:04X}"
            );
        }
    }
}
