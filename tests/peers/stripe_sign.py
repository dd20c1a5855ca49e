"""Signs a webhook body with Stripe's official Python library (its test-header helper).

usage: stripe_sign.py SECRET BODY  ->  prints a Stripe-Signature header value
"""
import sys

import stripe

secret, body = sys.argv[1], sys.argv[2]
header = stripe.WebhookSignature.generate_signature_header(body, secret)
# The library's own verifier must accept it too.
stripe.WebhookSignature.verify_header(body, header, secret, tolerance=300)
print(header)
