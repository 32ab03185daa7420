#!/usr/bin/env python3
"""Sends emails through Apprise to a plain SMTP server when asked, for the SMTP benchmark
(tests/benches/smtp.rs), and times each one.

    apprise_send.py HOST PORT FROM TO SUBJECT TEXT HTML

Prints `apprise <version>` (the installed package's) once ready; then for each line `N`
read from standard input sends N emails, each with SUBJECT and the HTML body (Apprise
builds the text part from it), and prints their durations in seconds as one JSON list.
Each notify() connects, greets, sends and quits: Apprise keeps no connection between
messages (apprise/plugins/email/base.py, `with AppriseSMTPController(...)` per send).
"""
import json
import sys
import time

import apprise
from apprise.plugins.email import NotifyEmail

# Apprise sleeps between sends to respect provider limits; the benchmark measures the
# sending itself.
NotifyEmail.request_rate_per_sec = 0


def main():
    host, port, sender, to, subject, _text, html = sys.argv[1:8]
    user, domain = sender.split("@", 1)
    a = apprise.Apprise()
    url = (f"mailto://{user}@{domain}?smtp={host}&port={port}&from={sender}&to={to}"
           "&mode=insecure&format=html")
    if not a.add(url):
        sys.exit(f"apprise refused {url}")
    print(f"apprise {apprise.__version__}", flush=True)
    for line in sys.stdin:
        durations = []
        for i in range(int(line)):
            start = time.perf_counter()
            if not a.notify(title=subject, body=html, body_format=apprise.NotifyFormat.HTML):
                sys.exit(f"apprise failed at message {i}")
            durations.append(time.perf_counter() - start)
        print(json.dumps(durations), flush=True)


if __name__ == "__main__":
    main()
