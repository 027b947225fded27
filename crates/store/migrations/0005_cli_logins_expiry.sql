-- Every new CLI login deletes the requests that expired a day ago: by this index, not by a
-- scan of the table (which anyone can grow by starting logins).
CREATE INDEX cli_logins_expires_at ON cli_logins (expires_at);
