//! The admin console's files, embedded in the binary at build time: no Node toolchain,
//! no build step, nothing fetched from another origin. The local runner serves them at
//! `/` and `/console/`, the API function at `/console/`.

/// One embedded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../assets/index.html"),
};

/// A JavaScript module of the page (`app.js` imports the others).
const fn script(body: &'static [u8]) -> Asset {
    Asset {
        content_type: "text/javascript; charset=utf-8",
        body,
    }
}

/// The file a path below the console's root names (`""` and `index.html` are the page);
/// `None` for anything else.
pub fn asset(path: &str) -> Option<Asset> {
    match path.trim_start_matches('/') {
        "" | "index.html" => Some(INDEX),
        "app.js" => Some(script(include_bytes!("../assets/app.js"))),
        "core.js" => Some(script(include_bytes!("../assets/core.js"))),
        "notifications.js" => Some(script(include_bytes!("../assets/notifications.js"))),
        "audit.js" => Some(script(include_bytes!("../assets/audit.js"))),
        "console.css" => Some(Asset {
            content_type: "text/css; charset=utf-8",
            body: include_bytes!("../assets/console.css"),
        }),
        _ => None,
    }
}

/// The headers every console file is served with: the page may load and call only its
/// own origin, may not be framed, and is not cached past a deployment.
pub const HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_files_are_served_and_nothing_else() {
        for (path, kind) in [
            ("", "text/html"),
            ("/", "text/html"),
            ("index.html", "text/html"),
            ("app.js", "text/javascript"),
            ("core.js", "text/javascript"),
            ("notifications.js", "text/javascript"),
            ("audit.js", "text/javascript"),
            ("console.css", "text/css"),
        ] {
            let a = asset(path).unwrap_or_else(|| panic!("{path}"));
            assert!(a.content_type.starts_with(kind), "{path}");
            assert!(!a.body.is_empty());
        }
        for path in ["../Cargo.toml", "src/lib.rs", "app.js.map", "x"] {
            assert_eq!(asset(path), None, "{path}");
        }
    }

    /// The seed's wording, which the people who use it were trained on.
    #[test]
    fn the_page_has_the_seeds_tabs_and_labels() {
        let page = std::str::from_utf8(INDEX.body).unwrap();
        for tab in [
            ">Outgoing SMS<",
            ">Outgoing Email<",
            ">Communication<",
            ">Notifications<",
            // v1.2, administrators only
            ">Audit<",
        ] {
            assert!(page.contains(tab), "{tab}");
        }
        for label in [
            "Control Center",
            "Provider",
            "Gateway URL",
            "Format",
            "Username",
            "Password",
            "Sender number",
            "Http Header",
            "Failover",
            "Sender Email Address",
            "SMTP Server URL",
            "SMTP Server Port",
            "SMTP Username",
            "SMTP User Password",
            "Use TLS",
            "Dispatch",
            "Incident Contacts",
            "Messages",
            "Distress",
            "Dispatching Virtual Users",
            "Manual SMS",
            "App fallback (seconds)",
            "To",
            // v1.2
            "Smart encoding",
            "Max segments",
            "Sample message",
            "SMS help text",
            // v1.2 audit trail's filters
            "Person",
            "Target",
        ] {
            assert!(
                page.contains(&format!(">{label}</label>")),
                "no <label> reads {label}"
            );
        }
        // Every input, select and textarea has a <label for> naming it.
        for tag in ["<input id=\"", "<select id=\"", "<textarea id=\""] {
            for part in page.split(tag).skip(1) {
                let id = &part[..part.find('"').unwrap()];
                assert!(
                    page.contains(&format!("<label for=\"{id}\">")),
                    "{id} has no label"
                );
            }
        }
        let script = std::str::from_utf8(asset("app.js").unwrap().body).unwrap();
        for option in [
            "Via the Mobile App Only",
            "SMS/Email if Mobile App Fails",
            "Mobile App, SMS and Email",
        ] {
            assert!(script.contains(option), "{option}");
        }
        // Only its own origin: nothing is loaded or fetched from an absolute URL.
        for attr in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
            assert!(!page.contains(attr), "{attr}");
        }
        for module in ["app.js", "core.js", "notifications.js", "audit.js"] {
            let text = std::str::from_utf8(asset(module).unwrap().body).unwrap();
            assert!(
                !text.contains("fetch(\"http") && !text.contains("fetch(`http"),
                "{module}"
            );
            // Modules import one another by relative path only.
            for import in text.lines().filter(|l| l.starts_with("import ")) {
                assert!(import.contains("from \"./"), "{module}: {import}");
            }
        }
    }
}
