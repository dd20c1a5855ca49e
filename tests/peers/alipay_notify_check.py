"""The fields every Alipay async notify carries, as Alipay documents them (shared by the peers).

A notify about a trade that was paid (payment, refund) also names the payment; a refund notify
names the refund. Raises SystemExit naming what is missing or malformed.
"""
import json
import re
import sys

COMMON = [
    "notify_time", "notify_type", "notify_id", "app_id", "auth_app_id", "charset", "version",
    "sign_type", "sign", "trade_no", "out_trade_no", "trade_status", "total_amount",
    "receipt_amount", "buyer_pay_amount", "invoice_amount", "gmt_create", "seller_id", "subject",
]
PAID = ["gmt_payment", "buyer_logon_id", "fund_bill_list"]
REFUND = ["refund_fee", "gmt_refund", "out_biz_no"]
TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
AMOUNT = re.compile(r"^\d+\.\d{2}$")


def check_notify(form, kind):
    required = COMMON + (PAID if kind in ("payment", "refund") else []) + (REFUND if kind == "refund" else [])
    missing = [k for k in required if not form.get(k)]
    if missing:
        sys.exit("{} notify lacks {}".format(kind, ", ".join(missing)))
    problems = []
    if form["notify_type"] != "trade_status_sync":
        problems.append("notify_type")
    if form["sign_type"] != "RSA2" or form["charset"] != "utf-8" or form["version"] != "1.0":
        problems.append("sign_type, charset or version")
    if form["auth_app_id"] != form["app_id"]:
        problems.append("auth_app_id")
    if not re.fullmatch(r"\d{28}", form["trade_no"]):
        problems.append("trade_no is not 28 digits")
    for k in ("notify_time", "gmt_create", "gmt_payment", "gmt_close"):
        if k in form and not TIME.match(form[k]):
            problems.append(k)
    for k in ("total_amount", "receipt_amount", "buyer_pay_amount", "invoice_amount", "refund_fee"):
        if k in form and not AMOUNT.match(form[k]):
            problems.append(k)
    if "fund_bill_list" in form:
        bills = json.loads(form["fund_bill_list"])
        if not (isinstance(bills, list) and bills and all("amount" in b and "fundChannel" in b for b in bills)):
            problems.append("fund_bill_list")
    if kind == "refund" and not re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}", form["gmt_refund"]):
        problems.append("gmt_refund (yyyy-MM-dd HH:mm:ss.SSS)")
    expected = {"payment": ["TRADE_SUCCESS"], "close": ["TRADE_CLOSED"], "refund": ["TRADE_SUCCESS", "TRADE_CLOSED"]}
    if form["trade_status"] not in expected[kind]:
        problems.append("trade_status {} for a {} notify".format(form["trade_status"], kind))
    if problems:
        sys.exit("{} notify: bad {}".format(kind, "; ".join(problems)))
