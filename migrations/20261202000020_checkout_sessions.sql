-- The hosted checkout page's sessions. A session is opened by the portal for one applicant and
-- a set of applications (one today; group payments name several), reached through a single-use
-- link and then bound to the first browser that opened it. Only hashes of the link's token and
-- of the browser's cookie are kept.
CREATE TABLE checkout_sessions (
    id            uuid PRIMARY KEY,
    applicant_id  uuid NOT NULL REFERENCES users (id),
    token_hash    bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    browser_hash  bytea CHECK (octet_length(browser_hash) = 32),
    bound_at      timestamptz,
    return_url    text CHECK (char_length(return_url) <= 2048),
    locale        text CHECK (locale IN ('en', 'zh-CN')),  -- NULL: the browser's Accept-Language decides
    expires_at    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT checkout_sessions_bound_together CHECK ((browser_hash IS NULL) = (bound_at IS NULL))
);

CREATE TABLE checkout_session_applications (
    session_id     uuid NOT NULL REFERENCES checkout_sessions (id) ON DELETE CASCADE,
    application_id uuid NOT NULL REFERENCES applications (id),
    PRIMARY KEY (session_id, application_id)
);
CREATE INDEX checkout_session_applications_by_application
    ON checkout_session_applications (application_id);
