-- A payment's Stripe client secret lives in its `next_action` (`use_stripe_sdk`), where the
-- checkout reads it; this column has been written by nothing since.
ALTER TABLE payments DROP COLUMN client_secret;
