"""Alipay interoperability peer on Ant Group's official SDK (PyPI `alipay-sdk-python`).

Its package is also named `alipay`, like python-alipay-sdk's, so the two cannot share a Python
environment: this one is installed apart (`pip install --target`, see
alipay-official-requirements.txt) and found through EVISA_ALIPAY_OFFICIAL_SDK (default
~/.cache/evisa/alipay-official).

  call GATEWAY_URL APP_ID MERCHANT_PKCS1_PRIVATE_PEM ALIPAY_PUBLIC_PEM METHOD BIZ_JSON
      DefaultAlipayClient.execute: signs the request, and verifies the answer's signature over its
      raw text. Prints {"ok": <the verified result object>}, or {"refused": "<why>"} when the SDK
      does not accept the answer.
  verify-notify ALIPAY_PUBLIC_PEM KIND FORM_JSON
      SignatureUtils.verify_with_rsa over the form's sorted fields without `sign` and `sign_type`
      (Alipay's rule for notifies), and alipay_notify_check.py's documented fields. Prints "ok".
"""
import importlib
import json
import os
import sys
from urllib.parse import urlparse

sys.path.insert(0, os.environ.get("EVISA_ALIPAY_OFFICIAL_SDK", os.path.expanduser("~/.cache/evisa/alipay-official")))

import alipay.aop.api.util.WebUtils as web_utils  # noqa: E402
from alipay.aop.api.AlipayClientConfig import AlipayClientConfig  # noqa: E402
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient  # noqa: E402
from alipay.aop.api.exception.Exception import RequestException, ResponseException  # noqa: E402
from alipay.aop.api.util.SignatureUtils import get_sign_content, verify_with_rsa  # noqa: E402

from alipay_notify_check import check_notify  # noqa: E402


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def connection_with_port(url, query_string, timeout):
    """The SDK's get_http_connection ignores the URL's port (and fails on one): the transport
    is the only thing replaced; signing and verification are the SDK's own."""
    import http.client

    parts = urlparse(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = cls(host=parts.hostname, port=parts.port, timeout=timeout)
    return "{}://{}{}?{}".format(parts.scheme, parts.netloc, parts.path, query_string), connection


web_utils.get_http_connection = connection_with_port


def request_for(method):
    # alipay.trade.fastpay.refund.query -> AlipayTradeFastpayRefundQueryRequest
    name = "".join(part.capitalize() for part in method.split(".")) + "Request"
    module = importlib.import_module("alipay.aop.api.request." + name)
    return getattr(module, name)()


def call(gateway, app_id, private_path, public_path, method, biz_json):
    config = AlipayClientConfig()
    config.server_url = gateway
    config.app_id = app_id
    config.app_private_key = read(private_path)
    config.alipay_public_key = read(public_path)
    config.sign_type = "RSA2"
    client = DefaultAlipayClient(alipay_client_config=config)
    request = request_for(method)
    request.biz_content = json.loads(biz_json)
    try:
        content = client.execute(request)
    except (RequestException, ResponseException) as e:
        print(json.dumps({"refused": str(e)[:300]}))
        return
    print(json.dumps({"ok": json.loads(content)}))


def verify_notify(public_path, kind, form_json):
    form = json.loads(form_json)
    check_notify(form, kind)
    sign = form["sign"]
    unsigned = {k: v for k, v in form.items() if k not in ("sign", "sign_type") and v != ""}
    message = get_sign_content(unsigned).encode("utf-8")
    try:
        verified = verify_with_rsa(read(public_path), message, sign)
    except Exception as e:  # rsa raises VerificationError rather than returning False
        sys.exit("alipay-sdk-python does not verify the notify: {}".format(e))
    if not verified:
        sys.exit("alipay-sdk-python does not verify the notify")
    print("ok")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"call": call, "verify-notify": verify_notify}[command](*args)
