//! SMS replies: what an inbound message says, and a custom gateway's inbound webhook.

use crate::phone::PhoneNumber;
use crate::receipt::{ReceiptParseError, callback_fields};
use crate::response::Answer;
use crate::settings::GatewayFormat;

/// What a dispatch SMS to a user ends with: how to answer it by replying.
pub const REPLY_INSTRUCTIONS: &str = "Reply 1 responding, 2 unavailable";
/// What a reply that is not an answer (nor a keyword) gets back, at most once a minute.
pub const WHAT_TO_REPLY: &str =
    "Flare: reply 1 if you are responding, 2 if you are unavailable. Reply STOP to opt out.";

/// The confirmation of a recorded answer.
pub fn confirmation(answer: Answer, incident: Option<&str>) -> String {
    let what = match answer {
        Answer::Responding => "responding",
        Answer::Unavailable => "unavailable",
    };
    match incident {
        Some(i) => format!("Flare: recorded, you are {what} ({i}). Reply 1 or 2 to change it."),
        None => format!("Flare: recorded, you are {what}. Reply 1 or 2 to change it."),
    }
}

/// What a reply to a dispatch SMS asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `1`, `Y`, `YES` (responding); `2`, `N`, `NO` (unavailable).
    Answer(Answer),
    /// `STOP` and the carriers' synonyms: no more SMS to this number.
    OptOut,
    /// `START`, `UNSTOP`: SMS again.
    OptIn,
    Help,
    /// Anything else: the sender is told what can be replied.
    Other,
}

/// The opt-out words carriers honour (CTIA; AWS End User Messaging's defaults).
pub const OPT_OUT_WORDS: &[&str] = &[
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "OPTOUT",
    "OPT-OUT",
    "REVOKE",
];

/// Longer than any keyword: a text past it is read as nothing but `Other`.
const KEYWORD_MAX: usize = 16;

impl Reply {
    /// A reply's text, case and surrounding spaces ignored.
    pub fn parse(text: &str) -> Reply {
        let word = text.trim();
        if word.len() > KEYWORD_MAX {
            return Reply::Other;
        }
        let word = word.to_ascii_uppercase();
        match word.as_str() {
            "1" | "Y" | "YES" => Reply::Answer(Answer::Responding),
            "2" | "N" | "NO" => Reply::Answer(Answer::Unavailable),
            "START" | "UNSTOP" => Reply::OptIn,
            "HELP" => Reply::Help,
            w if OPT_OUT_WORDS.contains(&w) => Reply::OptOut,
            _ => Reply::Other,
        }
    }
}

/// An inbound SMS: who sent it, to which number, what it says, the provider's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundSms {
    pub from: PhoneNumber,
    pub to: String,
    pub text: String,
    pub message_id: String,
}

/// The most of a reply's text kept: a reply is a word; 10 KB of text is read as `Other`.
pub const MAX_REPLY_TEXT: usize = 1_600;

/// A custom gateway's inbound-message webhook, once its signature has been checked:
/// `twilio` (form `From`, `To`, `Body`, `MessageSid`), `json`/`form` (`from`, `to`,
/// `text`, `message_id`).
pub fn parse_gateway_inbound(
    format: GatewayFormat,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<InboundSms, ReceiptParseError> {
    let fields = callback_fields(format, content_type, body)?;
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    let (from, to, text, id) = match format {
        GatewayFormat::Twilio => (get("From"), get("To"), get("Body"), get("MessageSid")),
        GatewayFormat::Json | GatewayFormat::Form => {
            (get("from"), get("to"), get("text"), get("message_id"))
        }
    };
    let malformed = ReceiptParseError::Malformed;
    let from = PhoneNumber::parse(from.ok_or(malformed("the message names its sender"))?)
        .map_err(|_| malformed("the sender is a phone number"))?;
    let message_id = id
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .ok_or(malformed("the message has an id"))?
        .to_string();
    Ok(InboundSms {
        from,
        to: to.unwrap_or_default().chars().take(32).collect(),
        text: kept(text.unwrap_or_default()),
        message_id,
    })
}

/// A reply's text, at most [`MAX_REPLY_TEXT`] bytes (cut on a character boundary: what
/// matters of a reply is its first word).
fn kept(text: &str) -> String {
    let mut end = text.len().min(MAX_REPLY_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// AWS End User Messaging's two-way SMS message, as its SNS topic carries it (the
/// notification's `Message`): `originationNumber` (who sent it), `destinationNumber`
/// (the number it went to), `messageBody`, `inboundMessageId`.
pub fn parse_end_user_messaging(message: &str) -> Result<InboundSms, ReceiptParseError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Inbound {
        origination_number: Option<String>,
        destination_number: Option<String>,
        message_body: Option<String>,
        inbound_message_id: Option<String>,
    }
    let malformed = ReceiptParseError::Malformed;
    let m: Inbound = serde_json::from_str(message)
        .map_err(|_| malformed("an End User Messaging message is a JSON object"))?;
    let from = PhoneNumber::parse(
        m.origination_number
            .as_deref()
            .ok_or(malformed("the message names its originationNumber"))?,
    )
    .map_err(|_| malformed("the originationNumber is a phone number"))?;
    let message_id = m
        .inbound_message_id
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .ok_or(malformed("the message has an inboundMessageId"))?;
    Ok(InboundSms {
        from,
        to: m
            .destination_number
            .unwrap_or_default()
            .chars()
            .take(32)
            .collect(),
        text: kept(m.message_body.as_deref().unwrap_or_default()),
        message_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_as_the_contract_says_whatever_their_case_and_spaces() {
        for (text, want) in [
            ("1", Reply::Answer(Answer::Responding)),
            (" y ", Reply::Answer(Answer::Responding)),
            ("Yes", Reply::Answer(Answer::Responding)),
            ("2", Reply::Answer(Answer::Unavailable)),
            ("n", Reply::Answer(Answer::Unavailable)),
            ("NO\n", Reply::Answer(Answer::Unavailable)),
            ("stop", Reply::OptOut),
            ("Opt-Out", Reply::OptOut),
            ("unsubscribe", Reply::OptOut),
            ("START", Reply::OptIn),
            ("unstop", Reply::OptIn),
            ("help", Reply::Help),
            ("12", Reply::Other),
            ("yes please", Reply::Other),
            ("", Reply::Other),
        ] {
            assert_eq!(Reply::parse(text), want, "{text:?}");
        }
        for w in OPT_OUT_WORDS {
            assert_eq!(Reply::parse(&w.to_lowercase()), Reply::OptOut);
        }
        assert_eq!(Reply::parse(&"1".repeat(10_000)), Reply::Other);
    }

    #[test]
    fn an_end_user_messaging_message_reads_and_junk_is_refused() {
        let m = parse_end_user_messaging(
            r#"{"originationNumber":"+14155550117","destinationNumber":"+12065550142","messageKeyword":"KEYWORD_1","messageBody":" 2 ","inboundMessageId":"cae173d2-66b9-564c-8309-21f858e9fb84"}"#,
        )
        .unwrap();
        assert_eq!(m.from.as_str(), "+14155550117");
        assert_eq!((m.to.as_str(), m.text.as_str()), ("+12065550142", " 2 "));
        assert_eq!(Reply::parse(&m.text), Reply::Answer(Answer::Unavailable));
        for bad in [
            "not json",
            r#"{"destinationNumber":"+12065550142","messageBody":"1","inboundMessageId":"x"}"#,
            r#"{"originationNumber":"nope","messageBody":"1","inboundMessageId":"x"}"#,
            r#"{"originationNumber":"+14155550117","messageBody":"1"}"#,
        ] {
            assert!(parse_end_user_messaging(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_gateways_inbound_webhook_reads_in_each_format() {
        let twilio = b"From=%2B14155550117&To=%2B15005550006&Body=1&MessageSid=SM123";
        let m = parse_gateway_inbound(GatewayFormat::Twilio, None, twilio).unwrap();
        assert_eq!(m.from.as_str(), "+14155550117");
        assert_eq!((m.to.as_str(), m.text.as_str()), ("+15005550006", "1"));
        assert_eq!(m.message_id, "SM123");
        let json =
            br#"{"from": "+14155550117", "to": "ACMEFIRE", "text": "yes", "message_id": 42}"#;
        let m = parse_gateway_inbound(GatewayFormat::Json, None, json).unwrap();
        assert_eq!((m.text.as_str(), m.message_id.as_str()), ("yes", "42"));
        let form = b"from=%2B14155550117&to=x&text=STOP&message_id=m-1";
        let m = parse_gateway_inbound(GatewayFormat::Form, None, form).unwrap();
        assert_eq!(Reply::parse(&m.text), Reply::OptOut);
        // 10 KB of text is kept short, and reads as nothing Flare acts on.
        let long = format!(
            r#"{{"from": "+14155550117", "text": "{}", "message_id": "m-2"}}"#,
            "a".repeat(10_240)
        );
        let m = parse_gateway_inbound(GatewayFormat::Json, None, long.as_bytes()).unwrap();
        assert_eq!(m.text.len(), MAX_REPLY_TEXT);
        assert_eq!(Reply::parse(&m.text), Reply::Other);
        for bad in [
            &br#"{"to": "x", "text": "1", "message_id": "m"}"#[..],
            br#"{"from": "not a number", "text": "1", "message_id": "m"}"#,
            br#"{"from": "+14155550117", "text": "1"}"#,
            b"[]",
        ] {
            assert!(parse_gateway_inbound(GatewayFormat::Json, None, bad).is_err());
        }
    }
}
