"""Prints, as JSON, the environment variable names template.yaml gives each function
binary: {"flare-api": ["FLARE_...", ...], ...} (Globals merged with the function's own);
with --by-id, each function by logical id: {"ApiFunction": {"binary": "flare-api",
"variables": [...]}, ...} (two functions may run one binary: the urgent lanes').
Each function is built by the Makefile beside the template (BuildMethod: makefile), whose
`build-<LogicalId>: BIN = <binary>` line names the binary it packages.

The emulator tests start each release binary with exactly these names, so a variable a
binary requires but the template does not set fails the tests, not a deployment.
"""

import json
import os
import re
import sys

from cfnlint.decode import decode


def main(path, by_id=False):
    template, errors = decode(path)
    if errors:
        sys.exit(f"{path}: {errors}")
    common = (
        template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    )
    makefile = os.path.join(os.path.dirname(os.path.abspath(path)), "Makefile")
    with open(makefile) as f:
        binaries = dict(re.findall(r"^build-(\w+): BIN = (\S+)$", f.read(), re.M))
    out = {}
    for name, res in template["Resources"].items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        if res.get("Metadata", {}).get("BuildMethod") != "makefile":
            sys.exit(f"{name} is not built with BuildMethod: makefile")
        binary = binaries.get(name)
        if not binary:
            sys.exit(f"{name}: the Makefile has no 'build-{name}: BIN = <binary>' line")
        own = res.get("Properties", {}).get("Environment", {}).get("Variables", {})
        names = sorted(set(common) | set(own))
        if by_id:
            out[name] = {"binary": binary, "variables": names}
        else:
            out[binary] = names
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], "--by-id" in sys.argv[2:])
