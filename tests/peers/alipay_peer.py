"""Alipay interoperability peer, on the python-alipay-sdk library (PyPI), for the Rust tests.

  check-request MERCHANT_PRIVATE_PEM MERCHANT_PUBLIC_PEM PARAMS_JSON
      The SDK verifies our request signature (all params but `sign`, sorted) with our public key,
      and signs the same params itself: RSA PKCS#1 v1.5 is deterministic, so the SDK's signature
      must equal ours byte for byte. Prints "ok".
  sign-notify ALIPAY_PRIVATE_PEM FIELDS_JSON
      Signs notify fields as Alipay does (everything but `sign` and `sign_type`), with the SDK.
      Prints the fields with `sign` and `sign_type` added, as JSON.
  call GATEWAY_URL APP_ID MERCHANT_PRIVATE_PEM ALIPAY_PUBLIC_PEM METHOD BIZ_JSON
      Calls METHOD at the gateway with the SDK's own client, which verifies the answer's
      signature over its raw text. Prints {"ok": <the verified result object>}, or
      {"refused": "<why>"} when the SDK does not accept the answer (unsigned, `error_response`,
      or a signature that does not verify).
  verify-notify ALIPAY_PUBLIC_PEM KIND FORM_JSON
      The SDK verifies a notify form (KIND: payment, close or refund) and alipay_notify_check.py
      checks that it carries every documented field. Prints "ok".

alipay_official_peer.py does `call` and `verify-notify` with Ant Group's official SDK.
"""
import json
import sys
from urllib.parse import parse_qsl

from alipay import AliPay
from alipay.exceptions import AliPayException, AliPayValidationError

from alipay_notify_check import check_notify


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def client(private_pem, public_pem):
    return AliPay(
        appid="peer",
        app_notify_url=None,
        app_private_key_string=private_pem,
        alipay_public_key_string=public_pem,
        sign_type="RSA2",
    )


def check_request(private_path, public_path, params_json):
    params = json.loads(params_json)
    ours = params.pop("sign")
    sdk = client(read(private_path), read(public_path))
    message = "&".join("{}={}".format(k, v) for k, v in sorted(params.items()) if v != "")
    if not sdk._verify(message, ours):
        sys.exit("the SDK does not verify our signature")
    signed = dict(parse_qsl(sdk.sign_data(dict(params)), keep_blank_values=True))
    if signed["sign"] != ours:
        sys.exit("the SDK's signature differs from ours")
    print("ok")


def sign_notify(private_path, fields_json):
    fields = json.loads(fields_json)
    fields.pop("sign", None)
    fields.pop("sign_type", None)
    # The SDK needs a public key to construct; any valid one will do for signing.
    sdk = client(read(private_path), read(private_path.replace("_private.pem", "_public.pem")))
    signed = dict(parse_qsl(sdk.sign_data(dict(fields)), keep_blank_values=True))
    fields["sign"] = signed["sign"]
    fields["sign_type"] = "RSA2"
    print(json.dumps(fields))


def call(gateway, app_id, private_path, public_path, method, biz_json):
    sdk = AliPay(
        appid=app_id,
        app_private_key_string=read(private_path),
        alipay_public_key_string=read(public_path),
        sign_type="RSA2",
    )
    # The SDK knows only Alipay's hosts; the gateway is an attribute it reads per call.
    sdk._gateway = gateway
    try:
        result = sdk.server_api(method, json.loads(biz_json))
    except AliPayValidationError:
        print(json.dumps({"refused": "signature does not verify"}))
        return
    except AliPayException as e:
        print(json.dumps({"refused": "unsigned or error_response: {}".format(e)}))
        return
    print(json.dumps({"ok": result}))


def verify_notify(public_path, kind, form_json):
    form = json.loads(form_json)
    check_notify(form, kind)
    sdk = AliPay(
        appid=form["app_id"],
        # Verification needs no private key; the SDK loads one anyway.
        app_private_key_string=read(public_path.replace("_public.pem", "_private.pem")),
        alipay_public_key_string=read(public_path),
        sign_type="RSA2",
    )
    data = dict(form)
    sign = data.pop("sign")
    if not sdk.verify(data, sign):
        sys.exit("python-alipay-sdk does not verify the notify")
    print("ok")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {
        "check-request": check_request,
        "sign-notify": sign_notify,
        "call": call,
        "verify-notify": verify_notify,
    }[command](*args)
