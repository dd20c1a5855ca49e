-- The card behind a succeeded card payment, for receipts (brand and last four digits only).
ALTER TABLE payments ADD COLUMN card_brand text;
ALTER TABLE payments ADD COLUMN card_last4 char(4) CHECK (card_last4 ~ '^[0-9]{4}$');
