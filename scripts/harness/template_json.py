"""Prints template.yaml as JSON, short-form tags expanded (`!Ref X` is {"Ref": "X"}), with
cfn-lint's decoder, so tests can check what the template wires together."""

import json
import sys

from cfnlint.decode import decode


def main(path):
    template, errors = decode(path)
    if errors:
        sys.exit(f"{path}: {errors}")
    print(json.dumps(template, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
