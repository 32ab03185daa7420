//! JSON that serde refuses for one reason a caller can fix field by field: a `\uD800`
//! escape with no pair (what a client that cut an emoji in half sends). The body is
//! read again with each such escape marked, so the error can name the field it is in.

use serde_json::Value;

/// Stands in for a lone surrogate while the body is read again (a noncharacter).
const MARK: char = '\u{FDD0}';

/// The path (`text`, `contacts[1].name`) of the first string, or object key, that holds
/// a lone surrogate escape; `None` when the body has none or is bad JSON for another
/// reason too.
pub fn lone_surrogate_path(body: &[u8]) -> Option<String> {
    let repaired = mark_lone_surrogates(body)?;
    let v: Value = serde_json::from_slice(&repaired).ok()?;
    find(&v, "")
}

fn hex4(b: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(b.get(..4)?).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// `body` with every lone surrogate escape replaced by [`MARK`]'s; `None` when it had none.
fn mark_lone_surrogates(body: &[u8]) -> Option<Vec<u8>> {
    let (mut out, mut i, mut marked) = (Vec::with_capacity(body.len()), 0, false);
    while i < body.len() {
        if body[i] != b'\\' {
            out.push(body[i]);
            i += 1;
            continue;
        }
        // Outside strings a backslash is bad JSON anyway: escapes are read in pairs.
        let code = (body.get(i + 1) == Some(&b'u'))
            .then(|| hex4(&body[i + 2..]))
            .flatten();
        match code {
            Some(high @ 0xD800..=0xDBFF)
                if body.get(i + 6..i + 8) == Some(b"\\u")
                    && hex4(&body[i + 8..]).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low)) =>
            {
                let _ = high;
                out.extend_from_slice(&body[i..i + 12]);
                i += 12;
            }
            Some(0xD800..=0xDFFF) => {
                out.extend_from_slice(format!("\\u{:04X}", MARK as u32).as_bytes());
                marked = true;
                i += 6;
            }
            _ => {
                out.extend_from_slice(&body[i..(i + 2).min(body.len())]);
                i += 2;
            }
        }
    }
    marked.then_some(out)
}

fn find(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::String(s) if s.contains(MARK) => Some(path.to_string()),
        Value::Object(m) => m.iter().find_map(|(k, v)| {
            let p = if path.is_empty() {
                k.replace(MARK, "?")
            } else {
                format!("{path}.{}", k.replace(MARK, "?"))
            };
            if k.contains(MARK) {
                return Some(p);
            }
            find(v, &p)
        }),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, v)| find(v, &format!("{path}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_surrogate_is_found_by_its_field() {
        assert!(serde_json::from_slice::<Value>(br#"{"text": "fire \ud83d"}"#).is_err());
        assert_eq!(
            lone_surrogate_path(br#"{"user_id": "u-1", "text": "fire \ud83d now"}"#).as_deref(),
            Some("text")
        );
        assert_eq!(
            lone_surrogate_path(br#"{"a": [{"b": "x"}, {"c": "\udc00"}]}"#).as_deref(),
            Some("a[1].c")
        );
        // A whole pair, an escaped backslash before `u`, or another fault: not this.
        assert_eq!(lone_surrogate_path(br#"{"text": "\ud83d\ude92"}"#), None);
        assert_eq!(lone_surrogate_path(br#"{"text": "\\ud83d"}"#), None);
        assert_eq!(lone_surrogate_path(br#"{"text": "\ud83d"#), None);
        assert_eq!(lone_surrogate_path(b"\\"), None);
    }
}
