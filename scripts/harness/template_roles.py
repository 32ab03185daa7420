#!/usr/bin/env python3
"""Each function's IAM role as template.yaml deploys it, for running the function binaries
under their own permissions against `serve.py moto --iam`.

    template_roles.py TEMPLATE [--resources JSON|FILE] [--param NAME=VALUE]...
        [--region R] [--account-id N] [--stack-name S] [--function ID]... [--drop ID:ACTION]...
        [--strict] [--actions | --env]
        [--endpoint-url URL --access-key-id K --secret-access-key S [--role-prefix P]]

The SAM transform (samtranslator, offline: its bundled managed-policy map names the ARNs)
makes each AWS::Serverless::Function's role: its policy templates expanded, plus what SAM
adds for its events and destinations (SQS poller, dead-letter queue, on-failure
destination). AWS managed policies are inlined from the documents moto ships. Intrinsics are
resolved against --resources, {"LogicalId": {"Ref": ..., "Arn": ..., "QueueName": ...}};
a resource the map lacks gets a synthesized name and ARN (listed on stderr; --strict fails
instead): a binary touching it is refused, since no such resource exists.

With --env, prints {id: {name: value}}: each function's environment variables (Globals
merged by the transform) resolved the same way; scripts/local-aws's env file and the
emulator tests start the binaries with them. Otherwise prints JSON: without --endpoint-url, {id: {"RoleName", "Policies": {name: document}}}
(--actions: {id: [sorted actions]}); with it, creates each role on moto (trust: the calling
admin, as moto checks an AWS principal), assumes it and prints
{id: {"AccessKeyId", "SecretAccessKey", "SessionToken", "RoleName", "RoleArn"}}.
"""
import argparse
import copy
import fnmatch
import json
import os
import re
import sys
import uuid

NO_VALUE = object()  # what Ref AWS::NoValue resolves to: the key or item is dropped


def transform(path, params, region):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import template_sam  # beside this file

    return template_sam.transform(path, params, region)


class Resolver:
    def __init__(self, template, params, resources, strict):
        self.template, self.params, self.resources = template, params, resources
        self.strict, self.synthesized = strict, set()

    def arn(self, service, rest, region=True):
        p = self.params
        return (f"arn:{p['AWS::Partition']}:{service}:{p['AWS::Region'] if region else ''}:"
                f"{p['AWS::AccountId']}:{rest}")

    def attr(self, lid, name):
        if lid in self.params:
            return self.params[lid]
        if lid in self.resources and name in self.resources[lid]:
            return self.resources[lid][name]
        if lid in self.template.get("Parameters", {}):
            sys.exit(f"template_roles: parameter {lid} has no value (--param {lid}=...)")
        if lid not in self.template["Resources"]:
            sys.exit(f"template_roles: {lid} is neither a parameter nor a resource")
        if self.strict:
            sys.exit(f"template_roles: --resources has no {lid}.{name}")
        self.synthesized.add(f"{lid}.{name}")
        return self.synthesize(lid, self.template["Resources"][lid]["Type"])[name]

    def synthesize(self, lid, kind):
        """A plausible physical name and ARN, as CloudFormation would name it."""
        name = f"{self.params['AWS::StackName']}-{lid}-unmapped"
        p = self.params
        if kind == "AWS::SQS::Queue":
            url = f"https://sqs.{p['AWS::Region']}.{p['AWS::URLSuffix']}/{p['AWS::AccountId']}/{name}"
            return {"Ref": url, "QueueName": name, "QueueUrl": url, "Arn": self.arn("sqs", name)}
        if kind == "AWS::DynamoDB::Table":
            return {"Ref": name, "Arn": self.arn("dynamodb", f"table/{name}")}
        if kind == "AWS::SNS::Topic":
            arn = self.arn("sns", name)
            return {"Ref": arn, "TopicArn": arn, "TopicName": name}
        if kind == "AWS::Logs::LogGroup":
            return {"Ref": name, "Arn": self.arn("logs", f"log-group:{name}:*")}
        if kind == "AWS::IAM::Role":
            return {"Ref": name, "Arn": self.arn("iam", f"role/{name}", region=False)}
        if kind == "AWS::Lambda::Function":
            return {"Ref": name, "Arn": self.arn("lambda", f"function:{name}")}
        service = kind.split("::")[1].lower()
        return {"Ref": name, "Arn": self.arn(service, name)}

    def condition(self, name):
        return bool(self.resolve(self.template.get("Conditions", {})[name]))

    def sub(self, text, variables):
        def one(m):
            key = m.group(1)
            if key.startswith("!"):
                return "${" + key[1:] + "}"
            if key in variables:
                return str(self.resolve(variables[key]))
            lid, _, name = key.partition(".")
            return str(self.attr(lid, name or "Ref"))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, v):
        if isinstance(v, list):
            return [x for x in (self.resolve(x) for x in v) if x is not NO_VALUE]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (fn, arg), = v.items()
            if fn == "Ref":
                return NO_VALUE if arg == "AWS::NoValue" else self.attr(arg, "Ref")
            if fn == "Fn::GetAtt":
                lid, name = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.attr(lid, name)
            if fn == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                return self.sub(text, variables)
            if fn == "Fn::Join":
                return arg[0].join(str(x) for x in self.resolve(arg[1]))
            if fn == "Fn::Select":
                return self.resolve(arg[1])[int(self.resolve(arg[0]))]
            if fn == "Fn::Split":
                return self.resolve(arg[1]).split(arg[0])
            if fn == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if fn == "Fn::Equals":
                a, b = (self.resolve(x) for x in arg)
                return str(a) == str(b)
            if fn == "Fn::Not":
                return not self.resolve(arg[0])
            if fn == "Fn::And":
                return all(self.resolve(x) for x in arg)
            if fn == "Fn::Or":
                return any(self.resolve(x) for x in arg)
            if fn == "Condition":
                return self.condition(arg)
            if fn.startswith("Fn::"):
                sys.exit(f"template_roles: {fn} is not supported")
        return {k: r for k, r in ((k, self.resolve(x)) for k, x in v.items()) if r is not NO_VALUE}


# The AWS managed policies the transform names, when read from --transformed (importing
# moto for them takes longer than the rest of this script).
SAVED_MANAGED = {}


def managed_policies_named_in(out):
    """The managed policies `out` names, from the copies moto ships: {name: policy}."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    text = json.dumps(out)
    return {name: p for name, p in json.loads(aws_managed_policies_data).items()
            if f"/{name}" in text}


def managed_policy(arn):
    """An AWS managed policy's document, from the copy moto ships."""
    if SAVED_MANAGED:
        policies = SAVED_MANAGED
    else:
        from moto.iam.aws_managed_policies import aws_managed_policies_data

        policies = json.loads(aws_managed_policies_data)
    name = arn.rsplit("/", 1)[-1]
    if ":iam::aws:policy/" not in arn or name not in policies:
        sys.exit(f"template_roles: {arn} is not an AWS managed policy moto knows")
    return name, policies[name]["Document"]


def roles(template, out, resolver, only):
    result = {}
    for lid, res in template["Resources"].items():
        if res["Type"] != "AWS::Serverless::Function" or (only and lid not in only):
            continue
        role_ref = out["Resources"][lid]["Properties"]["Role"]
        if not (isinstance(role_ref, dict) and "Fn::GetAtt" in role_ref):
            sys.exit(f"template_roles: {lid} has a role of its own ({role_ref}), not one SAM makes")
        role = resolver.resolve(out["Resources"][role_ref["Fn::GetAtt"][0]]["Properties"])
        policies = {p["PolicyName"]: p["PolicyDocument"] for p in role.get("Policies", [])}
        for arn in role.get("ManagedPolicyArns", []):
            name, document = managed_policy(arn)
            policies[name] = document
        result[lid] = {"RoleName": role_ref["Fn::GetAtt"][0], "Policies": policies}
    return result


def environments(template, out, resolver, only):
    """{id: {name: value}}: each function's variables as the transform leaves them
    (Globals merged with the function's own), resolved, every value a string (Lambda's)."""
    result = {}
    for lid, res in template["Resources"].items():
        if res.get("Type") != "AWS::Serverless::Function" or (only and lid not in only):
            continue
        variables = (out["Resources"][lid].get("Properties", {}).get("Environment", {})
                     .get("Variables", {}))
        resolved = resolver.resolve(variables)
        result[lid] = {k: v if isinstance(v, str) else json.dumps(v) for k, v in resolved.items()}
    return result


def as_list(x):
    return x if isinstance(x, list) else [x]


def drop(result, spec):
    """Removes one action from every Allow statement of a function's role."""
    lid, _, action = spec.partition(":")
    if lid not in result or not action:
        sys.exit(f"template_roles: --drop {spec}: expected FunctionId:service:Action, "
                 f"FunctionId one of {', '.join(result)}")
    found = False
    for name, doc in list(result[lid]["Policies"].items()):
        statements = []
        for st in as_list(doc["Statement"]):
            if st.get("Effect") != "Allow" or "Action" not in st:
                statements.append(st)
                continue
            kept = [a for a in as_list(st["Action"]) if a.lower() != action.lower()]
            found |= len(kept) < len(as_list(st["Action"]))
            if kept:
                statements.append(dict(st, Action=kept))
        if statements:
            doc["Statement"] = statements
        else:
            del result[lid]["Policies"][name]
    if not found:
        # Exact entries only: "sqs:SendMessage*" (SQSSendMessagePolicy's) is dropped whole.
        wild = [a for a in actions(result[lid]["Policies"]) if "*" in a and fnmatch.fnmatch(action.lower(), a.lower())]
        sys.exit(f"template_roles: --drop {spec}: {lid}'s role names no {action}" +
                 (f" (it has {', '.join(wild)}: drop that)" if wild else ""))


def actions(policies):
    return sorted({a for doc in policies.values() for st in as_list(doc["Statement"])
                   if st.get("Effect") == "Allow" for a in as_list(st.get("Action", []))})


def create(result, args):
    import boto3

    def client(service):
        return boto3.client(service, endpoint_url=args.endpoint_url, region_name=args.region,
                            aws_access_key_id=args.access_key_id,
                            aws_secret_access_key=args.secret_access_key)

    iam, sts = client("iam"), client("sts")
    admin = sts.get_caller_identity()["Arn"]
    prefix = args.role_prefix if args.role_prefix is not None else f"flare-{uuid.uuid4().hex[:8]}-"
    out = {}
    for lid, role in result.items():
        name = (prefix + lid)[:64]
        # moto evaluates the trust policy against the caller's ARN; a Service principal
        # (Lambda's, in AWS) makes its AssumeRole fail with a 500.
        trust = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": admin}, "Action": "sts:AssumeRole"}]}
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        # One inline policy holding every statement of the role's policies: the same
        # permissions (IAM allows what any statement allows), in one call instead of up
        # to a dozen, each a slow request to moto with IAM enforced. moto refuses a
        # document without Version 2012-10-17 (SAM's have none; IAM would take it as
        # 2008-10-17, which differs only in policy variables).
        statements = []
        for doc in role["Policies"].values():
            st = doc.get("Statement", [])
            statements.extend(st if isinstance(st, list) else [st])
        iam.put_role_policy(RoleName=name, PolicyName="FunctionPolicies",
                            PolicyDocument=json.dumps({"Version": "2012-10-17",
                                                       "Statement": statements}))
        creds = sts.assume_role(RoleArn=arn, RoleSessionName=lid[:64])["Credentials"]
        out[lid] = {k: creds[k] for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")}
        out[lid].update(RoleName=name, RoleArn=arn)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("template")
    p.add_argument("--resources", default="{}", help="JSON, or a file holding it ('-': stdin)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--account-id", default="123456789012")
    p.add_argument("--stack-name", default="flare-test")
    p.add_argument("--function", action="append", default=[], metavar="ID",
                   help="only these functions (default: every AWS::Serverless::Function)")
    p.add_argument("--drop", action="append", default=[], metavar="ID:ACTION",
                   help="remove an action from a function's role, e.g. SmsFunction:sns:Publish")
    p.add_argument("--strict", action="store_true", help="fail on a resource --resources lacks")
    p.add_argument("--actions", action="store_true", help="print each role's actions only")
    p.add_argument("--env", action="store_true",
                   help="print each function's environment variables, resolved, instead of roles")
    p.add_argument("--endpoint-url")
    p.add_argument("--access-key-id")
    p.add_argument("--secret-access-key")
    p.add_argument("--role-prefix", help="role names are PREFIX+LogicalId (default: flare-<random>-)")
    p.add_argument("--save-transformed", metavar="FILE",
                   help="only write the template and its SAM transform to FILE, for --transformed")
    p.add_argument("--transformed", metavar="FILE",
                   help="the template and its transform from --save-transformed (the transform "
                        "takes seconds; parameter values are applied after it, so one serves all)")
    args = p.parse_args()
    if args.save_transformed:
        template, out = transform(args.template, {}, args.region)
        with open(args.save_transformed, "w") as f:
            json.dump({"template": template, "transformed": out,
                       "managed": managed_policies_named_in(out)}, f, default=str)
        return

    raw = args.resources
    if not raw.lstrip().startswith("{"):
        raw = sys.stdin.read() if raw == "-" else open(raw).read()
    resources = json.loads(raw)
    given = dict(kv.split("=", 1) for kv in args.param)
    if args.transformed:
        with open(args.transformed) as f:
            saved = json.load(f)
        template, out = saved["template"], saved["transformed"]
        SAVED_MANAGED.update(saved["managed"])
    else:
        template, out = transform(args.template, {}, args.region)
    params = {k: str(v["Default"]) for k, v in template.get("Parameters", {}).items() if "Default" in v}
    params.update(given)
    china = args.region.startswith("cn-")
    params.update({"AWS::Region": args.region, "AWS::AccountId": args.account_id,
                   "AWS::StackName": args.stack_name,
                   "AWS::URLSuffix": "amazonaws.com.cn" if china else "amazonaws.com",
                   "AWS::Partition": "aws-cn" if china else
                   "aws-us-gov" if args.region.startswith("us-gov-") else "aws"})
    resolver = Resolver(out, params, resources, args.strict)
    if args.env:
        print(json.dumps(environments(template, out, resolver, set(args.function)), indent=1))
        return
    result = roles(template, out, resolver, set(args.function))
    for lid in set(args.function) - set(result):
        sys.exit(f"template_roles: no AWS::Serverless::Function {lid}")
    for spec in args.drop:
        drop(result, spec)
    if resolver.synthesized:
        print("template_roles: not in --resources, synthesized: " +
              ", ".join(sorted(resolver.synthesized)), file=sys.stderr)
    if args.actions:
        print(json.dumps({lid: actions(r["Policies"]) for lid, r in result.items()}, indent=1))
    elif args.endpoint_url:
        print(json.dumps(create(result, args)))
    else:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
