-- An operator can disable a user: their sign-ins, tokens and API keys are refused until
-- they are enabled again. NULL: enabled.
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
