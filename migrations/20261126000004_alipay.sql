-- Where the payer's browser goes after a redirect payment (Alipay), when the portal gave one.
ALTER TABLE payments ADD COLUMN return_url text;
