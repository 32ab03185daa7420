//! Every relative link in the documentation (README.md and every *.md under docs/) names a
//! file or directory that exists, and every `#anchor` names a heading of its page.
//!
//! It lives in flare-console because that crate is tiny and builds fast; it reads only the
//! repository's markdown, with nothing but std.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .canonicalize()
        .expect("the workspace root")
}

/// README.md and every markdown file under docs/, sorted.
fn pages(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "md") {
                out.push(path);
            }
        }
    }
    let mut out = vec![root.join("README.md")];
    walk(&root.join("docs"), &mut out);
    out.sort();
    out
}

/// GitHub's anchor for a heading: lowercase; letters, digits, `_`, spaces and hyphens
/// kept, everything else dropped; spaces become hyphens.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The text a heading renders as: `[text](target)` becomes text, and code and emphasis
/// marks go.
fn heading_text(raw: &str) -> String {
    let raw = raw.trim().trim_end_matches('#').trim_end();
    let mut text = String::new();
    let mut rest = raw;
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find("](").and_then(|mid| {
            let close = after[mid + 2..].find(')')?;
            Some((mid, mid + 2 + close))
        }) {
            Some((mid, close)) => {
                text.push_str(&after[..mid]);
                rest = &after[close + 1..];
            }
            None => {
                text.push('[');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text.chars().filter(|c| !matches!(c, '`' | '*')).collect()
}

/// Whether a line opens or closes a fenced code block.
fn is_fence(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with("```") || line.starts_with("~~~")
}

/// Every anchor a page's headings give, duplicates numbered as GitHub numbers them.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if is_fence(line) {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&heading_text(&line[hashes..]));
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// A line with its inline code spans blanked out, so `[a](b)` inside backticks is no link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else {
            out.push(if in_code { ' ' } else { c });
        }
    }
    out
}

/// The targets of a line's inline links and images (`[text](target)`, `![alt](target)`)
/// and of a reference definition (`[name]: target`).
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut targets = Vec::new();
    let trimmed = line.trim_start();
    if let Some(label) = trimmed.strip_prefix('[')
        && let Some(end) = label.find(']')
        && let Some(definition) = label[end + 1..].strip_prefix(':')
        && let Some(target) = definition.split_whitespace().next()
    {
        targets.push(target.to_string());
    }
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        // The target ends at the `)` that balances its `(`.
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = i;
                    break;
                }
                ')' => depth -= 1,
                _ => {}
            }
        }
        let inside = after[..end].trim();
        // `(target "title")`: the target is the first word; `<target>` loses its brackets.
        let target = inside
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_start_matches('<')
            .trim_end_matches('>');
        targets.push(target.to_string());
        rest = &after[end..];
    }
    targets
}

fn is_external(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    lower.starts_with("http:")
        || lower.starts_with("https:")
        || lower.starts_with("mailto:")
        || lower.contains("://")
}

/// `%20` and friends, as a browser would read them in a path.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every broken relative link of one page, as `page:line: (target): why`.
fn broken_links(root: &Path, page: &Path, broken: &mut Vec<String>, checked: &mut usize) {
    let text = fs::read_to_string(page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
    let own_anchors = anchors(&text);
    let dir = page.parent().expect("a page's directory");
    let name = page
        .strip_prefix(root)
        .unwrap_or(page)
        .display()
        .to_string();
    let mut in_code = false;
    for (n, line) in text.lines().enumerate() {
        if is_fence(line) {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        for target in link_targets(line) {
            if target.is_empty() || is_external(&target) {
                continue;
            }
            *checked += 1;
            let mut report =
                |why: String| broken.push(format!("{name}:{}: ({target}): {why}", n + 1));
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            if path.is_empty() {
                let anchor = anchor.unwrap_or_default();
                if !own_anchors.contains(anchor) {
                    report(format!("no heading of this page has the anchor #{anchor}"));
                }
                continue;
            }
            let path = percent_decode(path);
            let resolved = match path.strip_prefix('/') {
                Some(from_root) => root.join(from_root),
                None => dir.join(&path),
            };
            if !resolved.exists() {
                report(format!("{} does not exist", resolved.display()));
                continue;
            }
            let Some(anchor) = anchor.filter(|a| !a.is_empty()) else {
                continue;
            };
            if resolved.extension().is_none_or(|x| x != "md") {
                continue;
            }
            let linked = fs::read_to_string(&resolved)
                .unwrap_or_else(|e| panic!("{}: {e}", resolved.display()));
            if !anchors(&linked).contains(anchor) {
                report(format!("no heading of {path} has the anchor #{anchor}"));
            }
        }
    }
}

#[test]
fn every_relative_link_in_the_documentation_resolves() {
    let root = root();
    let pages = pages(&root);
    assert!(
        pages.len() > 1,
        "expected README.md and the docs/ pages, found {pages:?}"
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        broken_links(&root, page, &mut broken, &mut checked);
    }
    assert!(checked > 0, "no relative link found in {pages:?}");
    assert!(
        broken.is_empty(),
        "{} broken link(s) of {checked} checked:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn headings_slug_as_github_does() {
    assert_eq!(
        slug(&heading_text("The fallback window's timer")),
        "the-fallback-windows-timer"
    );
    assert_eq!(
        slug(&heading_text(
            "Incident events (EventBridge → `flare-router`)"
        )),
        "incident-events-eventbridge--flare-router"
    );
    assert_eq!(
        slug(&heading_text("Operating: alarms, metrics, dashboard, logs")),
        "operating-alarms-metrics-dashboard-logs"
    );
    assert_eq!(
        slug(&heading_text("Functions' environment")),
        "functions-environment"
    );
    let page = "# A\n\n## Same\n\n```sh\n# not a heading\n```\n\n## Same\n";
    let found = anchors(page);
    assert!(found.contains("a") && found.contains("same") && found.contains("same-1"));
    assert!(!found.contains("not-a-heading"));
}

#[test]
fn links_are_found_outside_code_only() {
    assert_eq!(
        link_targets("see [a](a.md#x) and ![b](img/b.png \"t\"), not `[c](c.md)`"),
        vec!["a.md#x", "img/b.png"]
    );
    assert_eq!(link_targets("[ref]: docs/api.md"), vec!["docs/api.md"]);
    assert!(link_targets("a [b] (c) d").is_empty());
}
