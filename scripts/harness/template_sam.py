"""template.yaml after the SAM transform (what CloudFormation deploys: the functions' IAM
roles with their policy statements, event source mappings, the HTTP API), offline. As a
script it prints it as JSON, so checkov (scripts/test) also sees what AWS::Serverless::*
expands to; template_roles.py builds the functions' roles from it. Needs the AWS SAM
translator (aws-sam-cli's dependency, in .venv); run with .venv's python:
.venv/bin/python scripts/harness/template_sam.py template.yaml > out.json"""

import copy
import json
import os
import sys


def transform(path, params=None, region="us-east-1"):
    """The template as written and as transformed, with `params` (parameter values)."""
    # The translator asks boto3 for a region (ARN partition) and never calls AWS here.
    os.environ["AWS_DEFAULT_REGION"] = region
    from samtranslator.translator.transform import transform as sam_transform
    from samtranslator.yaml_helper import yaml_parse

    with open(path) as f:
        template = yaml_parse(f.read())
    # A local CodeUri is an S3 object once `sam deploy` has packaged it (the transform
    # refuses a local path).
    for resource in template.get("Resources", {}).values():
        props = resource.get("Properties") or {}
        uri = props.get("CodeUri")
        if isinstance(uri, str) and not uri.startswith("s3://"):
            props["CodeUri"] = "s3://packaged/code.zip"

    class NoAwsLoader:  # SAM's bundled map names every managed policy it attaches
        def load(self):
            sys.exit("template_sam: SAM asked IAM for a managed policy map")

    return template, sam_transform(copy.deepcopy(template), dict(params or {}), NoAwsLoader())


def main(path):
    print(json.dumps(transform(path)[1], indent=1, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
