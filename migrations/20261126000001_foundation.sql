-- Users, the fee schedule and visa applications. Statuses are text with CHECK constraints so that
-- a row can only ever hold a status the domain knows.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL UNIQUE CHECK (email = lower(email)),
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('applicant', 'officer', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Named sets of nationalities that share a price (e.g. the EU).
CREATE TABLE nationality_groups (
    code text PRIMARY KEY CHECK (code ~ '^[a-z0-9_]{1,32}$'),
    name text NOT NULL
);

CREATE TABLE nationality_group_members (
    group_code text    NOT NULL REFERENCES nationality_groups (code) ON DELETE CASCADE,
    country    char(2) NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    PRIMARY KEY (group_code, country)
);
CREATE INDEX nationality_group_members_country ON nationality_group_members (country);

-- One rule prices one visa type at one speed for a nationality: a single country, a named group,
-- or (both NULL) everyone else. The most specific rule in force on the day wins.
CREATE TABLE fee_rules (
    id                  uuid PRIMARY KEY,
    visa_type           text NOT NULL CHECK (visa_type IN ('tourist', 'business', 'transit')),
    processing_speed    text NOT NULL CHECK (processing_speed IN ('standard', 'express')),
    nationality_country char(2) CHECK (nationality_country ~ '^[A-Z]{2}$'),
    nationality_group   text REFERENCES nationality_groups (code),
    effective_from      date NOT NULL,
    effective_until     date,              -- exclusive; NULL means open-ended
    exempt              boolean NOT NULL DEFAULT false,
    base_currency       char(3) NOT NULL,  -- the currency of the application's `fee`
    description         text NOT NULL DEFAULT '',
    CHECK (nationality_country IS NULL OR nationality_group IS NULL),
    CHECK (effective_until IS NULL OR effective_until > effective_from)
);
CREATE INDEX fee_rules_lookup ON fee_rules (visa_type, processing_speed, effective_from);

-- The price of a rule in each currency it may be paid in (USD by card, CNY by Alipay, ...).
CREATE TABLE fee_rule_prices (
    rule_id      uuid    NOT NULL REFERENCES fee_rules (id) ON DELETE CASCADE,
    currency     char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount_minor bigint  NOT NULL CHECK (amount_minor >= 0),
    PRIMARY KEY (rule_id, currency)
);

-- A rule's base currency must be one it has a price in; checked at commit so that a rule and its
-- prices can be inserted in either order.
ALTER TABLE fee_rules
    ADD CONSTRAINT fee_rules_base_price FOREIGN KEY (id, base_currency)
    REFERENCES fee_rule_prices (rule_id, currency) DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE applications (
    id                    uuid PRIMARY KEY,
    applicant_id          uuid NOT NULL REFERENCES users (id),
    status                text NOT NULL CHECK (status IN
                              ('draft', 'submitted', 'paid', 'processing', 'approved', 'rejected', 'expired')),
    -- Personal data, sealed with AES-256-GCM; each value carries the id of the key that sealed it.
    full_name             bytea,
    passport_number       bytea,
    date_of_birth         bytea,
    nationality           char(2) CHECK (nationality ~ '^[A-Z]{2}$'),
    visa_type             text CHECK (visa_type IN ('tourist', 'business', 'transit')),
    processing_speed      text CHECK (processing_speed IN ('standard', 'express')),
    intended_arrival_date date,
    -- The fee quote, fixed at submission: the only source of any amount ever charged.
    fee_rule_id           uuid REFERENCES fee_rules (id),
    fee_amount_minor      bigint CHECK (fee_amount_minor >= 0),
    fee_currency          char(3),
    fee_exempt            boolean,
    fee_prices            jsonb,
    decision_reason       text,
    submitted_at          timestamptz,
    paid_at               timestamptz,
    decided_at            timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- Everything past draft has its quote; a draft has none.
    CHECK ((status = 'draft') = (fee_rule_id IS NULL)),
    CHECK ((fee_rule_id IS NULL) = (fee_amount_minor IS NULL)
       AND (fee_rule_id IS NULL) = (fee_currency IS NULL)
       AND (fee_rule_id IS NULL) = (fee_exempt IS NULL)
       AND (fee_rule_id IS NULL) = (fee_prices IS NULL))
);
CREATE INDEX applications_by_applicant ON applications (applicant_id, id DESC);
CREATE INDEX applications_by_status ON applications (status, id DESC);

-- Append-only history of every status change: who or what caused it, from what, to what.
CREATE TABLE application_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    application_id uuid NOT NULL REFERENCES applications (id),
    event          text NOT NULL,
    from_status    text,
    to_status      text NOT NULL,
    actor_kind     text NOT NULL CHECK (actor_kind IN ('applicant', 'officer', 'admin', 'system', 'gateway')),
    actor_id       uuid,
    cause          text,
    occurred_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX application_events_by_application ON application_events (application_id, id);

CREATE FUNCTION forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER application_events_append_only BEFORE UPDATE OR DELETE ON application_events
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
