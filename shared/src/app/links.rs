//! Response links (v1.2): `GET /r/<code>` shows the dispatch and two buttons and changes
//! nothing (link scanners open links); `POST /r/<code>` records the answer. Plain HTML,
//! no script, readable on a phone.

use super::Services;
use super::error::ApiError;
use crate::domain::delivery::html_escape;
use crate::domain::{Answer, AnsweredVia, LinkCode, ResponseLink};

/// A page: its status and HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub html: String,
}

/// The headers every link page is served with: no caching (the page is someone's),
/// no referrer (the URL is the code), no framing, no script.
pub const PAGE_HEADERS: &[(&str, &str)] = &[
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    ),
];

/// `GET /r/<code>`: the dispatch and the two buttons, or the 404 page. One read.
pub async fn show(svc: &Services, code: &str) -> Result<Page, ApiError> {
    let Some(link) = find(svc, code).await? else {
        return Ok(gone());
    };
    Ok(Page {
        status: 200,
        html: page(&link, None),
    })
}

/// `POST /r/<code>` with the form field `response`: recorded (`responded_via: link`),
/// and a page saying what; the 404 page for a code that answers nothing.
pub async fn answer(svc: &Services, code: &str, form: &[u8]) -> Result<Page, ApiError> {
    let Some(link) = find(svc, code).await? else {
        return Ok(gone());
    };
    let chosen = url::form_urlencoded::parse(form)
        .find(|(k, _)| k == "response")
        .and_then(|(_, v)| Answer::parse(&v).ok());
    let Some(answer) = chosen else {
        return Ok(Page {
            status: 400,
            html: page(&link, Some("Choose Responding or Unavailable.")),
        });
    };
    // The link vouches that they were a recipient of a dispatch: nothing read to check.
    super::notifications::answer_as(
        svc.records(),
        &link.org_id,
        &link.notification_id,
        &link.user_id,
        answer,
        AnsweredVia::Link,
        true,
    )
    .await?;
    let said = format!(
        "Recorded: you are {}. You can change it below.",
        answer.as_str()
    );
    Ok(Page {
        status: 200,
        html: page(&link, Some(&said)),
    })
}

/// The link a code names, while it is valid (a code no link can have costs no read).
async fn find(svc: &Services, code: &str) -> Result<Option<ResponseLink>, ApiError> {
    let Some(code) = LinkCode::parse(code) else {
        return Ok(None);
    };
    let link = svc.log.link(&code.digest()).await?;
    Ok(link.filter(|l| l.valid_at(chrono::Utc::now())))
}

/// The 404 page of a link that is unknown or expired.
pub fn gone() -> Page {
    Page {
        status: 404,
        html: frame(
            "Link no longer valid",
            "<h1>This link is no longer valid</h1><p>Response links work for 24 hours. Answer in the app, or reply to the SMS.</p>",
        ),
    }
}

/// The dispatch, a note (what was recorded, or what is missing), and the two buttons.
fn page(link: &ResponseLink, note: Option<&str>) -> String {
    let note = note
        .map(|n| format!("<p class=\"note\" role=\"status\">{}</p>", html_escape(n)))
        .unwrap_or_default();
    let body = format!(
        "<h1>{}</h1><p>{}</p>{note}<p>Are you responding?</p>\
         <form method=\"post\">\
         <button name=\"response\" value=\"responding\">Responding</button>\
         <button name=\"response\" value=\"unavailable\">Unavailable</button>\
         </form>",
        html_escape(if link.title.is_empty() {
            "Dispatch"
        } else {
            &link.title
        }),
        html_escape(&link.text).replace('\n', "<br>"),
    );
    frame("Answer the dispatch", &body)
}

fn frame(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>Flare: {title}</title>\
         <style>body{{font:18px/1.4 system-ui,sans-serif;margin:0 auto;max-width:32em;padding:1em}}\
         button{{display:block;width:100%;font-size:1.2em;padding:.8em;margin:.5em 0}}\
         .note{{font-weight:bold}}</style></head><body><main>{body}</main></body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> ResponseLink {
        ResponseLink {
            digest: "d".into(),
            org_id: crate::domain::OrgId::parse("acme").unwrap(),
            notification_id: crate::domain::NotificationId::parse("inc-1").unwrap(),
            user_id: crate::domain::UserId::parse_existing("u-17").unwrap(),
            title: "Fire <b>".into(),
            text: "12 Main St\n2nd floor".into(),
            expires_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn the_page_names_the_incident_escaped_and_has_two_buttons_and_no_script() {
        let html = page(&link(), Some("Recorded: you are responding."));
        assert!(html.contains("<h1>Fire &lt;b&gt;</h1>"), "{html}");
        assert!(html.contains("12 Main St<br>2nd floor"));
        assert!(html.contains(">Responding</button>") && html.contains(">Unavailable</button>"));
        assert!(html.contains("Recorded: you are responding."));
        assert!(!html.contains("<script"));
        assert!(gone().html.contains("no longer valid"));
    }
}
