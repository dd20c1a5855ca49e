-- The refund that returned a duplicate charge's money (see payments.duplicate_charge).
ALTER TABLE payments ADD COLUMN duplicate_refund_reference text;
