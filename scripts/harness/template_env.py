"""Prints, as JSON, the environment variable names template.yaml gives each function
binary: {"flare-api": ["FLARE_...", ...], ...} (Globals merged with the function's own).

The emulator tests start each release binary with exactly these names, so a variable a
binary requires but the template does not set fails the tests, not a deployment.
"""

import json
import sys

from cfnlint.decode import decode


def main(path):
    template, errors = decode(path)
    if errors:
        sys.exit(f"{path}: {errors}")
    common = (
        template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    )
    out = {}
    for name, res in template["Resources"].items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        binary = res.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        if not binary:
            sys.exit(f"{name} has no Metadata.BuildProperties.Binary")
        own = res.get("Properties", {}).get("Environment", {}).get("Variables", {})
        out[binary] = sorted(set(common) | set(own))
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
