//! The demo's printed report: per notification a table of its deliveries, then what
//! each reason shown means and the totals by status.

use super::*;

/// The printed report: per notification a table of its deliveries, then what each
/// reason shown means and the totals by status.
#[derive(Default)]
struct Report {
    out: String,
    reasons_seen: Vec<String>,
    totals: std::collections::BTreeMap<String, usize>,
}

pub(super) async fn report(
    app: &LocalApp,
    routed: Vec<(String, NotificationId)>,
) -> anyhow::Result<String> {
    let mut report = Report::default();
    for (title, id) in routed {
        let (n, logged) = settled(app, &id).await?;
        report.notification(&title, &n, &logged)?;
    }
    report.finish()
}

impl Report {
    fn notification(
        &mut self,
        title: &str,
        n: &Value,
        logged: &flare_shared::ports::Logged,
    ) -> anyhow::Result<()> {
        writeln!(self.out, "\n== {title}")?;
        writeln!(
            self.out,
            "{:<34} {:<6} {:<5} {:<11} {:<9} {:<26} reason / provider",
            "recipient", "chan", "cycle", "status", "fallback", "to"
        )?;
        for r in n["recipients"].as_array().into_iter().flatten() {
            let user = r["user_id"].as_str();
            let contact = r["contact"]["name"].as_str();
            let who = match user {
                Some(u) => PEOPLE
                    .iter()
                    .find(|p| p.id == u)
                    .map_or(u.to_string(), |p| p.name.to_string()),
                None => format!("{} (not a user)", contact.unwrap_or("?")),
            };
            for d in r["deliveries"].as_array().into_iter().flatten() {
                let status = d["status"].as_str().unwrap_or("");
                let channel = d["channel"].as_str().unwrap_or("");
                // Only what was attempted went somewhere, or went as a fallback.
                let attempted = matches!(status, "sent" | "failed" | "delivered" | "undelivered");
                let to = if attempted {
                    destination(logged, user, contact, channel)
                } else {
                    String::new()
                };
                let why = self.why(d, attempted);
                *self.totals.entry(status.to_string()).or_default() += 1;
                let fallback = if attempted && d["fallback"] == true {
                    "yes"
                } else {
                    ""
                };
                let cycle = d["cycle"].as_u64().unwrap_or(0);
                writeln!(
                    self.out,
                    "{who:<34} {channel:<6} {cycle:<5} {status:<11} {fallback:<9} {to:<26} {why}"
                )?;
            }
            if let Some(at) = r["acknowledged_at"].as_str() {
                writeln!(self.out, "{who:<34} acknowledged at {at}")?;
            }
            if let (Some(answer), Some(via)) = (r["response"].as_str(), r["responded_via"].as_str())
            {
                writeln!(self.out, "{who:<34} answered {answer} (by {via})")?;
            }
        }
        Ok(())
    }

    /// The reason column: why a delivery did not go (with the provider's detail), or
    /// the provider it went through, its failover and its fallback reason.
    fn why(&mut self, d: &Value, attempted: bool) -> String {
        if let Some(reason) = d["reason"].as_str() {
            self.saw(reason.split(':').next().unwrap_or(reason));
            return match d["detail"].as_str() {
                Some(detail) => format!("{reason} ({detail})"),
                None => reason.to_string(),
            };
        }
        let mut via = format!("via {}", d["provider"].as_str().unwrap_or("-"));
        if let Some(from) = d["failover_from"].as_str() {
            via.push_str(&format!(" (failover from {from})"));
        }
        match d["fallback_reason"].as_str() {
            Some(code) if attempted => {
                self.saw(code);
                format!("{via}, {code}")
            }
            _ => via,
        }
    }

    fn saw(&mut self, code: &str) {
        if !self.reasons_seen.iter().any(|c| c == code) {
            self.reasons_seen.push(code.to_string());
        }
    }

    fn finish(mut self) -> anyhow::Result<String> {
        writeln!(self.out, "\n== Reasons shown above")?;
        for code in &self.reasons_seen {
            writeln!(self.out, "{code:<26} {}", reason_meaning(code))?;
        }
        let summary: Vec<String> = self
            .totals
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        writeln!(
            self.out,
            "\n== Summary: {} deliveries: {}",
            self.totals.values().sum::<usize>(),
            summary.join(", ")
        )?;
        Ok(self.out)
    }
}

/// Where a delivery went: the number, the address, or "app" for push.
fn destination(
    logged: &flare_shared::ports::Logged,
    user: Option<&str>,
    contact: Option<&str>,
    channel: &str,
) -> String {
    use flare_shared::domain::{Destination, RecipientRef};
    logged
        .records
        .iter()
        .find(|r| {
            r.channel.as_str() == channel
                && match &r.recipient {
                    RecipientRef::User(u) => Some(u.as_str()) == user,
                    RecipientRef::Contact { contact: c, .. } => Some(c.name.as_str()) == contact,
                }
        })
        .and_then(|r| r.destination.as_ref())
        .map_or_else(String::new, |d| match d {
            Destination::Devices(_) => "app".to_string(),
            Destination::Phone(p) => p.as_str().to_string(),
            Destination::Email(e) => e.as_str().to_string(),
        })
}

/// One sentence for a reason code, from the reason reference (docs/reasons.md), so the
/// demo's legend says what the documentation says.
fn reason_meaning(code: &str) -> String {
    let page = include_str!("../../../docs/reasons.md");
    let cell = format!("| `{code}` |");
    page.lines()
        .find_map(|l| l.strip_prefix(&cell))
        .map(|rest| rest.trim().trim_end_matches('|').trim().to_string())
        .unwrap_or_else(|| "see docs/reasons.md".to_string())
}
