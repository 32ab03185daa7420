//! The demo shows the seed's rules at work: each line here is one rule.

#[tokio::test]
async fn the_demo_shows_every_routing_rule() {
    let out = flare_local::demo::run().await.unwrap();
    for needle in [
        "push_delivered",
        "no_app_receipt",
        "push_failed",
        "not_licensed_for_app",
        "virtual_user",
        "endpoint_disabled",
        "no_primary_mobile",
        "no_primary_email",
        "no_device",
        "not_in_method",
        "no_app",
        "== SOS Raised",
        "== Incident Dispatched from South",
        "via sns (failover from http)",
        "bounced (smtp; 550 5.1.1 mailbox unavailable)",
        "== Manual SMS to Bo",
        // v1.2: Ana answers in the app, Fi by the link in her SMS, Bo by replying to
        // the SMS.
        "answered responding (by app)",
        "answered responding (by link)",
        "answered unavailable (by sms)",
    ] {
        assert!(
            out.contains(needle),
            "{needle} missing from the demo:\n{out}"
        );
    }
    // Di's push failed, and SMS went as fallback.
    assert!(
        out.lines().any(|l| l.starts_with("Di")
            && l.contains("sms")
            && l.contains("sent")
            && l.contains("yes")),
        "{out}"
    );
    assert!(!out.contains("pending"), "everything settles: {out}");
    // The window's two stories, on the dispatch (the first table): Ana's app confirmed
    // the push, so her SMS and email were not sent; Gus's phone stayed silent, so both
    // went as fallback when the window ended.
    let dispatch: Vec<&str> = out
        .split("\n== ")
        .nth(1)
        .expect("the dispatch's table")
        .lines()
        .collect();
    let line = |who: &str, channel: &str| -> String {
        dispatch
            .iter()
            .find(|l| l.starts_with(who) && l.split_whitespace().any(|w| w == channel))
            .unwrap_or_else(|| panic!("no {who} {channel} line: {out}"))
            .to_string()
    };
    assert!(line("Ana", "push").contains("delivered"), "{out}");
    for channel in ["sms", "email"] {
        let ana = line("Ana", channel);
        assert!(
            ana.contains("skipped") && ana.contains("push_delivered"),
            "{ana}"
        );
        let gus = line("Gus", channel);
        assert!(
            gus.contains("sent") && gus.contains("yes") && gus.contains("no_app_receipt"),
            "{gus}"
        );
    }
    assert!(line("Gus", "push").contains("sent"), "{out}");
    // The escalation story: Hal is notified again on every channel in cycle 1, then
    // acknowledges, and no later cycle starts.
    let hal: Vec<&str> = out
        .split("\n== ")
        .find(|t| t.starts_with("Incident Dispatched to Hal"))
        .expect("the escalation's table")
        .lines()
        .filter(|l| l.starts_with("Hal"))
        .collect();
    let cycle = |n: &str| -> Vec<&str> {
        hal.iter()
            .filter(|l| l.split_whitespace().nth(4) == Some(n))
            .copied()
            .collect()
    };
    let first = cycle("1");
    assert_eq!(first.len(), 3, "{out}");
    assert!(first.iter().all(|l| l.contains(" sent ")), "{out}");
    assert!(cycle("2").is_empty() && cycle("3").is_empty(), "{out}");
    assert!(hal.iter().any(|l| l.contains("acknowledged at")), "{out}");
    assert!(line("Di", "sms").contains("push_failed"), "{out}");
    // Where each attempted delivery went.
    assert!(
        out.lines().any(|l| l.starts_with("Di")
            && l.contains("sms")
            && l.contains("sent")
            && l.contains('+')),
        "{out}"
    );
    // Fallback is marked only on what was attempted as one: a skipped delivery never.
    assert!(
        !out.lines()
            .any(|l| l.contains(" skipped ") && l.contains(" yes ")),
        "{out}"
    );
    // A legend of the reasons shown, in the reference's words, and a summary.
    let legend = out
        .split("== Reasons shown above")
        .nth(1)
        .expect("a legend");
    assert!(
        legend.contains("no_app_receipt") && legend.contains("did not confirm it"),
        "{legend}"
    );
    assert!(
        !legend.contains("see docs/reasons.md"),
        "every code found: {legend}"
    );
    let summary = out
        .lines()
        .find(|l| l.starts_with("== Summary: "))
        .expect("a summary");
    assert!(
        summary.contains(" sent") && summary.contains(" skipped"),
        "{summary}"
    );
}
