-- Four eyes on refunds: a refund above the approval threshold waits in `pending_approval` until a
-- different staff member approves it (then `pending`, and the gateway work starts) or declines it.
-- What waits for approval counts against the payment's refundable remainder like what is pending.
ALTER TABLE refunds DROP CONSTRAINT refunds_status_check;
ALTER TABLE refunds ADD CONSTRAINT refunds_status_check
    CHECK (status IN ('pending_approval', 'pending', 'succeeded', 'failed', 'declined'));
ALTER TABLE refunds
    ADD COLUMN decided_by uuid REFERENCES users (id),
    ADD COLUMN decided_at timestamptz,
    -- The database itself refuses a refund approved or declined by the one who asked for it.
    ADD CONSTRAINT refunds_four_eyes CHECK (decided_by IS NULL OR decided_by <> requested_by);
