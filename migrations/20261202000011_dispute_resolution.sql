-- An officer resolves a dispute's case: only then does its application take decisions again.
-- The gateway's outcome alone does not release the hold (a lost chargeback means the fee was
-- taken back; someone decides what that means for the application).
ALTER TABLE disputes
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN resolved_by uuid REFERENCES users (id),
    ADD COLUMN resolution  text CHECK (char_length(resolution) BETWEEN 1 AND 1000),
    ADD CONSTRAINT disputes_resolved_together
        CHECK ((resolved_at IS NULL) = (resolved_by IS NULL)
           AND (resolved_at IS NULL) = (resolution IS NULL));
CREATE INDEX disputes_unresolved ON disputes (payment_id) WHERE resolved_at IS NULL;
