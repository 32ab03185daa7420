//! The demo shows the seed's rules at work: each line here is one rule.

#[tokio::test]
async fn the_demo_shows_every_routing_rule() {
    let out = flare_local::demo::run().await.unwrap();
    for needle in [
        "push_sent",
        "not_licensed_for_app",
        "virtual_user",
        "endpoint_disabled",
        "no_primary_mobile",
        "no_primary_email",
        "no_device",
        "not_in_method",
        "no_app",
        "== SOS Raised",
        "== Manual SMS to Bo",
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
        legend.contains("push_sent") && legend.contains("push was accepted"),
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
