"""moto's access control, closer to what AWS checks (serve.py moto --iam).

moto 5.2.5 checks each request's action against the resource "*" for every service but
SQS (whose queue ARN it knows), so a statement naming a table, secret, SES identity or
SNS endpoint never matches and the call is refused; and it checks DynamoDB's
TransactWriteItems as `dynamodb:TransactWriteItems`, an action IAM does not have (AWS
checks each item's PutItem, UpdateItem, DeleteItem or ConditionCheckItem on its table).
Here a request to one of the services below is checked as the (action, resource) pairs
AWS checks, and a refusal is answered in the shape AWS gives it (moto answers XML to a
JSON-protocol request, and wraps a query-protocol error in EC2's <Errors>: an SDK reads
no error code from either). Conditions and NotResource are still not evaluated.
"""
import functools


def _dynamodb(r, action, arn):
    def table(name, index=None):
        base = name if name.startswith("arn:") else arn("dynamodb", f"table/{name}")
        return f"{base}/index/{index}" if index else base

    if action in ("TransactWriteItems", "TransactGetItems"):
        item_action = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                       "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}
        return [(item_action[kind], table(op["TableName"]))
                for item in r._get_param("TransactItems") or [] for kind, op in item.items()]
    if action in ("BatchGetItem", "BatchWriteItem"):
        return [(action, table(name)) for name in r._get_param("RequestItems") or {}]
    name = r._get_param("TableName")
    return [(action, table(name, r._get_param("IndexName")) if name else "*")]


# SNS actions with no resource type (the Service Authorization Reference): only "*".
_SNS_WITHOUT_RESOURCE = {"CreatePlatformEndpoint", "DeleteEndpoint", "SetSMSAttributes",
                         "GetSMSAttributes"}


def _sns(r, action, arn):
    # The ARN the request names (a topic, an endpoint); Publish to a phone number names
    # none, so only a statement with "*" allows it.
    if action in _SNS_WITHOUT_RESOURCE:
        return [(action, "*")]
    names = ("TopicArn", "TargetArn", "EndpointArn", "ResourceArn")
    return [(action, next((r._get_param(n) for n in names if r._get_param(n)), "*"))]


def _secretsmanager(r, action, arn):
    from moto.secretsmanager.models import secretsmanager_backends

    name = r._get_param("SecretId") or r._get_param("Name")
    if not name:
        return [(action, "*")]
    secrets = secretsmanager_backends[r.current_account][r.region].secrets
    # An existing secret's ARN (its name and random suffix); a new one's, without it.
    return [(action, secrets[name].arn if name in secrets else
             name if name.startswith("arn:") else arn("secretsmanager", f"secret:{name}"))]


def _sesv2(r, action, arn):
    if action != "SendEmail":
        return [(action, "*")]
    sender = r._get_param("FromEmailAddress") or ""
    sender = sender.rsplit("<", 1)[-1].rstrip(">").strip()  # "Name <a@b>"
    pairs = [(action, arn("ses", f"identity/{sender}"))]
    if r._get_param("ConfigurationSetName"):
        pairs.append((action, arn("ses", f"configuration-set/{r._get_param('ConfigurationSetName')}")))
    return pairs


PAIRS = {"dynamodb": _dynamodb, "sns": _sns, "secretsmanager": _secretsmanager, "sesv2": _sesv2}


@functools.cache
def _request_for(action):
    """moto's IAM request, checking `action` instead of the one it reads off the request."""
    from moto.iam.access_control import IAMRequest

    class Request(IAMRequest):
        def __init__(self, **kwargs):
            super().__init__(**dict(kwargs, action=action))

    return Request


def _as_aws_answers(r, e):
    """moto's refusal in the shape the request's protocol has in AWS: an SDK reads the
    code of neither moto's XML answer to a JSON request nor its EC2-style <Errors>."""
    from xml.sax.saxutils import escape

    from moto.core.exceptions import JsonRESTError, _RESTError

    content_type = r.headers.get("Content-Type") or ""
    if "json" in content_type:  # DynamoDB, SQS, Secrets Manager, SES v2
        kind = "AccessDeniedException" if e.error_type == "AccessDenied" else e.error_type
        error = JsonRESTError(kind, e.message)
        r.response_headers["X-Amzn-ErrorType"] = kind
    elif "x-www-form-urlencoded" in content_type:  # the query protocol: SNS
        kind = "AuthorizationError" if (e.error_type, r.service_name) == ("AccessDenied", "sns") else e.error_type
        error = _RESTError(kind, e.message)
        error.description = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{kind}</Code>"
                             f"<Message>{escape(e.message)}</Message></Error>"
                             "<RequestId>moto-iam</RequestId></ErrorResponse>")
    else:
        return e
    error.code = e.code
    return error


def check_resources():
    from moto.core.exceptions import _RESTError
    from moto.core.responses import BaseResponse
    from moto.iam.access_control import IAMRequestBase

    # moto recomputes SigV4 over the body as it parsed and re-encoded it, which differs
    # from the bytes the Rust SDK signed for some form bodies (an SNS Publish of an SMS
    # text): a false SignatureDoesNotMatch. What is tested here is the policies; the
    # access key and its session token are still checked (an unknown one is refused).
    IAMRequestBase.check_signature = lambda self: None

    stock = BaseResponse._authenticate_and_authorize_normal_action

    def authorize(self, resource="*"):
        try:
            pairs = PAIRS.get(self.service_name)
            if pairs is None:
                return stock(self, resource)

            def arn(service, rest):
                return f"arn:{self.partition}:{service}:{self.region}:{self.current_account}:{rest}"

            for action, res in pairs(self, self._get_action(), arn) or [(self._get_action(), "*")]:
                self._authenticate_and_authorize_action(_request_for(action), res)
        except _RESTError as e:
            answer = _as_aws_answers(self, e)
            if answer is e:
                raise
            raise answer from e

    BaseResponse._authenticate_and_authorize_normal_action = authorize
