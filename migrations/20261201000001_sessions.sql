-- Tokens die with the account's state: every access token carries the account's token_version,
-- and a password change or disabling the account moves it on, so every earlier token is refused.
-- Staff routes read the role from here, never from the token, so a demotion takes effect at once.
ALTER TABLE users
    ADD COLUMN token_version bigint NOT NULL DEFAULT 0,
    ADD COLUMN disabled_at   timestamptz;
