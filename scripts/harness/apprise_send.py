#!/usr/bin/env python3
"""Sends N emails through Apprise to a plain SMTP server; prints the seconds taken and
the installed Apprise's version.

    apprise_send.py HOST PORT N FROM TO
"""
import sys
import time

import apprise
from apprise.plugins.email import NotifyEmail

# Apprise sleeps between sends to respect provider limits; the benchmark measures the
# sending itself.
NotifyEmail.request_rate_per_sec = 0


def main():
    host, port, n, sender, to = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    user, domain = sender.split("@", 1)
    a = apprise.Apprise()
    url = f"mailto://{user}@{domain}?smtp={host}&port={port}&from={sender}&to={to}&mode=insecure"
    if not a.add(url):
        sys.exit(f"apprise refused {url}")
    start = time.perf_counter()
    for i in range(n):
        if not a.notify(title=f"Apprise {i}", body="Engine 7 to 12 Main St"):
            sys.exit(f"apprise failed at message {i}")
    print(f"{time.perf_counter() - start:.6f} {apprise.__version__}")


if __name__ == "__main__":
    main()
